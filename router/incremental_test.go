package router_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"

	"github.com/weftmesh/weft/peer"
	"github.com/weftmesh/weft/router"
)

// genConfig draws a config on transport: a subset of six peers (two on the
// underlay subnet, so auto uses direct for them), eight /16 chunks of the
// range each owned by a present peer, by us or by nobody, rotated keys,
// and broken links that make some peers relayed.
func genConfig(t *rapid.T, transport string, insecure bool) router.Config {
	cfg := testConfig(transport, insecure)
	cfg.Peers = nil
	cfg.Local = []netip.Prefix{pfx("10.32.0.0/14")}
	for i := range 6 {
		if !rapid.Bool().Draw(t, fmt.Sprintf("present%d", i)) {
			continue
		}
		u := netip.AddrFrom4([4]byte{172, 16, 0, byte(20 + i)})
		if i < 2 {
			u = netip.AddrFrom4([4]byte{192, 168, 1, byte(20 + i)})
		}
		cfg.Peers = append(cfg.Peers, router.Peer{ID: peer.ID(0x10 + i), Name: fmt.Sprintf("p%d", i), Underlay: u,
			WGPublicKey: fmt.Sprintf("pub%d-%d", i, rapid.IntRange(0, 1).Draw(t, fmt.Sprintf("key%d", i)))})
	}
	for c := range 8 {
		chunk := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(36 + c), 0, 0}), 16)
		owner := rapid.IntRange(-2, len(cfg.Peers)-1).Draw(t, fmt.Sprintf("owner%d", c))
		switch {
		case owner == -1:
			cfg.Local = append(cfg.Local, chunk)
		case owner >= 0:
			p := &cfg.Peers[owner]
			if !p.Bridge.IsValid() {
				p.Bridge = chunk.Addr().Next()
			}
			p.Ranges = append(p.Ranges, chunk)
		}
	}
	for i := range cfg.Peers {
		if rapid.IntRange(0, 3).Draw(t, fmt.Sprintf("broken%d", i)) == 0 {
			cfg.Unreachable = append(cfg.Unreachable, cfg.Peers[i].ID)
			cfg.Peers[i].Unreachable = []peer.ID{cfg.ID}
		}
	}
	return cfg
}

// Applying a sequence of configs change by change (the incremental path)
// leaves the kernel and the WireGuard device exactly as applying the last
// config in full on a fresh kernel does.
func TestIncrementalEqualsFull(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		transport := rapid.SampledFrom([]string{router.TransportWireGuard, router.TransportVXLAN, router.TransportAuto}).Draw(t, "transport")
		insecure := transport == router.TransportVXLAN || rapid.Bool().Draw(t, "insecure")
		inc := newFixture(t, router.Options{})
		for step := range rapid.IntRange(1, 6).Draw(t, "steps") {
			cfg := genConfig(t, transport, insecure)
			if err := cfg.Validate(); err != nil {
				t.Skipf("generated an invalid config: %v", err)
			}
			if err := inc.r.Set(cfg); err != nil {
				t.Fatalf("step %d: incremental Set: %v", step, err)
			}
			full := newFixture(t, router.Options{})
			if err := full.r.Set(cfg); err != nil {
				t.Fatalf("step %d: full Set: %v", step, err)
			}
			if diff := cmp.Diff(full.k.Dump(), inc.k.Dump()); diff != "" {
				t.Fatalf("step %d: kernel after the incremental Set differs from a full one (-full +incremental):\n%s", step, diff)
			}
			if f, i := full.wg.Configured(), inc.wg.Configured(); f != i {
				t.Fatalf("step %d: WireGuard peers differ:\nfull:        %s\nincremental: %s", step, f, i)
			}
		}
		// And a resync finds nothing to repair.
		inc.take()
		if err := inc.r.Resync(); err != nil {
			t.Fatal(err)
		}
		if got := inc.take(); len(got) != 0 && !onlyWGReapply(got) {
			t.Fatalf("resync after incremental Sets changed:\n%s", strings.Join(got, "\n"))
		}
	})
}

// onlyWGReapply reports whether lines are the resync's forced WireGuard
// reconfiguration alone (it reapplies the peers to repair drift).
func onlyWGReapply(lines []string) bool {
	return len(lines) == 1 && strings.HasPrefix(lines[0], "wg configure ")
}
