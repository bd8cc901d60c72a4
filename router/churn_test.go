package router_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/peer"
	"github.com/weftmesh/weft/router"
	"github.com/weftmesh/weft/router/routertest"
)

func TestChurnTranscripts(t *testing.T) {
	vtepC := router.VTEPMAC(0xc).String()
	tests := []struct {
		name   string
		base   router.Config
		change func(*router.Config)
		want   []string
	}{
		{
			name:   "wireguard peer leaves: routes and WireGuard peer go",
			base:   testConfig(router.TransportWireGuard, false),
			change: func(c *router.Config) { c.Peers = c.Peers[:1] },
			want: []string{
				"route delete 10.40.0.0/14 dev weft-wg src 10.32.0.1",
				"route delete 10.40.0.1/32 dev weft-wg src 10.32.0.1",
				"route delete 10.44.0.0/15 dev weft-wg src 10.32.0.1",
				"wg configure weft-wg port 51820 peers [pubB@192.168.1.11:51820 allowed 10.36.0.0/14,10.36.0.1/32]",
			},
		},
		{
			name:   "vxlan peer leaves: routes, neighbour and FDB go",
			base:   testConfig(router.TransportVXLAN, true),
			change: func(c *router.Config) { c.Peers = c.Peers[:1] },
			want: []string{
				"fdb delete " + vtepC + " dst 172.16.0.12 dev weft-vx",
				"neigh delete 10.40.0.1 lladdr " + vtepC + " dev weft-vx",
				"route delete 10.40.0.0/14 via 10.40.0.1 dev weft-vx onlink src 10.32.0.1",
				"route delete 10.40.0.1/32 via 10.40.0.1 dev weft-vx onlink src 10.32.0.1",
				"route delete 10.44.0.0/15 via 10.40.0.1 dev weft-vx onlink src 10.32.0.1",
			},
		},
		{
			name: "range moves from C to B by donation: its route and AllowedIPs move",
			base: testConfig(router.TransportWireGuard, false),
			change: func(c *router.Config) {
				c.Peers[0].Ranges = append(c.Peers[0].Ranges, pfx("10.44.0.0/15"))
				c.Peers[1].Ranges = c.Peers[1].Ranges[:1]
			},
			want: []string{
				"wg configure weft-wg port 51820 peers [pubB@192.168.1.11:51820 allowed 10.36.0.0/14,10.36.0.1/32,10.44.0.0/15; " +
					"pubC@172.16.0.12:51820 allowed 10.40.0.0/14,10.40.0.1/32]",
			},
		},
		{
			name: "range moves from C to B over vxlan: the route changes next hop",
			base: testConfig(router.TransportVXLAN, true),
			change: func(c *router.Config) {
				c.Peers[0].Ranges = append(c.Peers[0].Ranges, pfx("10.44.0.0/15"))
				c.Peers[1].Ranges = c.Peers[1].Ranges[:1]
			},
			want: []string{
				"route replace 10.44.0.0/15 via 10.36.0.1 dev weft-vx onlink src 10.32.0.1",
			},
		},
		{
			name: "range reclaimed by us: it becomes local",
			base: testConfig(router.TransportVXLAN, true),
			change: func(c *router.Config) {
				c.Local = append(c.Local, pfx("10.44.0.0/15"))
				c.Peers[1].Ranges = c.Peers[1].Ranges[:1]
			},
			want: []string{
				"route replace 10.44.0.0/15 dev weft src 10.32.0.1",
			},
		},
		{
			name:   "peer changes underlay address: FDB follows",
			base:   testConfig(router.TransportVXLAN, true),
			change: func(c *router.Config) { c.Peers[1].Underlay = addr("172.16.0.99") },
			want: []string{
				"fdb delete " + vtepC + " dst 172.16.0.12 dev weft-vx",
				"fdb replace " + vtepC + " dst 172.16.0.99 dev weft-vx",
			},
		},
		{
			name:   "masquerade switched off",
			base:   testConfig(router.TransportDirect, true),
			change: func(c *router.Config) { c.Masquerade = false },
			want:   []string{"nft delete table ip weft"},
		},
		{
			name:   "explicit MTU",
			base:   testConfig(router.TransportDirect, true),
			change: func(c *router.Config) { c.MTU = 9000 },
			want:   []string{"link ensure weft type bridge mtu 9000 up"},
		},
		{
			name: "transport switch vxlan to wireguard: VXLAN device goes",
			base: testConfig(router.TransportVXLAN, true),
			change: func(c *router.Config) {
				c.Transport, c.Insecure = router.TransportWireGuard, false
			},
			want: []string{
				"link ensure weft type bridge mtu 1440 up",
				"link delete weft-vx",
				"link ensure weft-wg type wireguard mtu 1440 up",
				"sysctl net/ipv4/conf/weft-wg/rp_filter=2",
				"addr add 10.32.0.1/32 dev weft-wg noprefixroute",
				"route replace 10.36.0.0/14 dev weft-wg src 10.32.0.1",
				"route replace 10.36.0.1/32 dev weft-wg src 10.32.0.1",
				"route replace 10.40.0.0/14 dev weft-wg src 10.32.0.1",
				"route replace 10.40.0.1/32 dev weft-wg src 10.32.0.1",
				"route replace 10.44.0.0/15 dev weft-wg src 10.32.0.1",
				"wg create weft-wg mtu 1440",
				"wg configure weft-wg port 51820 peers [pubB@192.168.1.11:51820 allowed 10.36.0.0/14,10.36.0.1/32; " +
					"pubC@172.16.0.12:51820 allowed 10.40.0.0/14,10.40.0.1/32,10.44.0.0/15]",
			},
		},
		{
			name: "transport switch wireguard to direct: WireGuard device goes",
			base: testConfig(router.TransportWireGuard, false),
			change: func(c *router.Config) {
				c.Transport, c.Insecure = router.TransportDirect, true
			},
			want: []string{
				"link ensure weft type bridge mtu 1500 up",
				"link delete weft-wg", // its routes go with it
				"route replace 10.36.0.0/14 via 192.168.1.11 dev eth0 src 10.32.0.1",
				"route replace 10.36.0.1/32 via 192.168.1.11 dev eth0 src 10.32.0.1",
				"wg delete weft-wg",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, router.Options{})
			f.set(t, tt.base)
			cfg := tt.base
			cfg.Peers = slices.Clone(cfg.Peers)
			for i := range cfg.Peers {
				cfg.Peers[i].Ranges = slices.Clone(cfg.Peers[i].Ranges)
			}
			cfg.Local = slices.Clone(cfg.Local)
			tt.change(&cfg)
			got := f.set(t, cfg)
			// Deletions come from a map walk: compare them as a set.
			if diff := cmp.Diff(sortDeletes(tt.want), sortDeletes(got)); diff != "" {
				t.Errorf("transcript after change (-want +got):\n%s", diff)
			}
			if got := f.set(t, cfg); len(got) != 0 {
				t.Errorf("repeating the changed config changed the kernel:\n%q", got)
			}
		})
	}
}

// sortDeletes sorts each run of consecutive "... delete ..." lines.
func sortDeletes(lines []string) []string {
	out := slices.Clone(lines)
	for i := 0; i < len(out); {
		j := i
		for j < len(out) && strings.Contains(out[j], " delete ") && !strings.HasPrefix(out[j], "link") && !strings.HasPrefix(out[j], "wg") {
			j++
		}
		slices.Sort(out[i:j])
		if j == i {
			j++
		}
		i = j
	}
	return out
}

func TestResyncRepairsDrift(t *testing.T) {
	f := newFixture(t, router.Options{ResyncInterval: 20 * time.Millisecond, Debounce: time.Millisecond})
	cfg := testConfig(router.TransportVXLAN, true)
	f.set(t, cfg)
	want := f.k.Routes()

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = f.r.Run(ctx) }()
	defer func() { cancel(); wg.Wait() }()

	f.k.DeleteRouteByHand(pfx("10.40.0.0/14"))
	f.k.DeleteNeighByHand("weft-vx", addr("10.40.0.1"))
	testutil.Eventually(t, 5*time.Second, "route and neighbour restored", func() error {
		if diff := cmp.Diff(want, f.k.Routes()); diff != "" {
			return fmt.Errorf("routes (-want +got):\n%s", diff)
		}
		return nil
	})
	neigh := "neigh replace 10.40.0.1 lladdr " + router.VTEPMAC(0xc).String() + " dev weft-vx"
	testutil.Eventually(t, 5*time.Second, "neighbour restored", func() error {
		if !slices.Contains(f.take(), neigh) {
			return fmt.Errorf("no %q in the transcript yet", neigh)
		}
		return nil
	})

	// While Run runs, Set is debounced: a burst of changes ends in the last state.
	for i := range 5 {
		c := cfg
		c.MTU = 1400 + i
		if err := f.r.Set(c); err != nil {
			t.Fatalf("Set: %v", err)
		}
	}
	testutil.Eventually(t, 5*time.Second, "debounced MTU", func() error {
		if got := f.r.MTU(); got != 1404 {
			return fmt.Errorf("MTU() = %d; want 1404", got)
		}
		return nil
	})
}

func TestResetTranscript(t *testing.T) {
	f := newFixture(t, router.Options{})
	f.set(t, testConfig(router.TransportWireGuard, false))
	if err := f.r.Reset(); err != nil {
		t.Fatalf("Reset: %v", err)
	}
	got := f.take()
	want := []string{"link delete weft-wg", "link delete weft", "nft delete table ip weft", "wg delete weft-wg"}
	// Routes via the deleted devices vanished with them; the rest were
	// deleted one by one.
	for _, l := range want {
		if !slices.Contains(got, l) {
			t.Errorf("Reset transcript lacks %q:\n%s", l, strings.Join(got, "\n"))
		}
	}
	if r := f.k.Routes(); len(r) != 0 {
		t.Errorf("routes after Reset = %q; want none", r)
	}
	if got := f.r.MTU(); got != 0 {
		t.Errorf("MTU() after Reset = %d; want 0", got)
	}
}

func TestResetConfigNames(t *testing.T) {
	f := newFixture(t, router.Options{})
	cfg := testConfig(router.TransportVXLAN, true)
	cfg.Bridge, cfg.VXIface = "br-x", "vx-x"
	f.set(t, cfg)
	// A fresh Router (weft reset) over the same kernel, told the names.
	r2, err := router.New(router.Options{Kernel: f.k, WireGuard: f.wg.Factory()})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := r2.ResetConfig(cfg); err != nil {
		t.Fatalf("ResetConfig: %v", err)
	}
	got := f.take()
	for _, l := range []string{"link delete vx-x", "link delete br-x", "nft delete table ip weft"} {
		if !slices.Contains(got, l) {
			t.Errorf("ResetConfig transcript lacks %q:\n%s", l, strings.Join(got, "\n"))
		}
	}
	if r := f.k.Routes(); len(r) != 0 {
		t.Errorf("routes after ResetConfig = %q; want none", r)
	}
}

func TestStats(t *testing.T) {
	f := newFixture(t, router.Options{})
	f.set(t, testConfig(router.TransportWireGuard, false))
	hs := time.Unix(1700000000, 0)
	f.wg.SetStats(map[string]router.WGPeerStats{
		"pubB":    {LastHandshake: hs, RxBytes: 10, TxBytes: 20, Endpoint: netip.MustParseAddrPort("192.168.1.11:51820")},
		"unknown": {RxBytes: 1},
	})
	want := map[peer.ID]router.PeerStats{0xb: {LastHandshake: hs, RxBytes: 10, TxBytes: 20, Endpoint: "192.168.1.11:51820"}}
	if got := f.r.LastStats(); got != nil {
		t.Errorf("LastStats() before any reading = %v; want nil", got)
	}
	if diff := cmp.Diff(want, f.r.Stats()); diff != "" {
		t.Errorf("Stats() (-want +got):\n%s", diff)
	}
	f.wg.SetStats(map[string]router.WGPeerStats{"pubB": {RxBytes: 99}})
	if diff := cmp.Diff(want, f.r.LastStats()); diff != "" {
		t.Errorf("LastStats() is not the last reading (-want +got):\n%s", diff)
	}
}

func TestMTU(t *testing.T) {
	tests := []struct {
		name      string
		transport string
		insecure  bool
		underlay  int
		explicit  int
		want      int
	}{
		{"wireguard 1500", router.TransportWireGuard, false, 1500, 0, 1440},
		{"auto secure jumbo", router.TransportAuto, false, 9000, 0, 8940},
		{"vxlan 1500", router.TransportVXLAN, true, 1500, 0, 1450},
		{"auto insecure takes the vxlan overhead", router.TransportAuto, true, 1500, 0, 1450},
		{"direct", router.TransportDirect, true, 1500, 0, 1500},
		{"explicit wins", router.TransportWireGuard, false, 1500, 1300, 1300},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, router.Options{})
			f.k.SetUnderlay(underlayA, underlayWithMTU("eth0", tt.underlay))
			cfg := testConfig(tt.transport, tt.insecure)
			cfg.MTU = tt.explicit
			f.set(t, cfg)
			if got := f.r.MTU(); got != tt.want {
				t.Errorf("MTU() = %d; want %d", got, tt.want)
			}
		})
	}
}

func TestMTUIPv6Underlay(t *testing.T) {
	for _, tt := range []struct {
		transport string
		insecure  bool
		want      int
	}{{router.TransportWireGuard, false, 1420}, {router.TransportVXLAN, true, 1430}} {
		f := newFixture(t, router.Options{})
		u6 := addr("fd00::10")
		f.k.SetUnderlay(u6, router.Underlay{Dev: "eth0", MTU: 1500, Prefix: pfx("fd00::10/64")})
		cfg := testConfig(tt.transport, tt.insecure)
		cfg.Underlay = u6
		f.set(t, cfg)
		if got := f.r.MTU(); got != tt.want {
			t.Errorf("%s over IPv6: MTU() = %d; want %d", tt.transport, got, tt.want)
		}
	}
}

func underlayWithMTU(dev string, mtu int) router.Underlay {
	return router.Underlay{Dev: dev, MTU: mtu, Prefix: pfx("192.168.1.10/24")}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*router.Config)
	}{
		{"bad transport", func(c *router.Config) { c.Transport = "carrier-pigeon" }},
		{"bridge addr outside range", func(c *router.Config) { c.BridgeAddr = pfx("10.64.0.1/12") }},
		{"bridge addr wrong length", func(c *router.Config) { c.BridgeAddr = pfx("10.32.0.1/24") }},
		{"wireguard without key", func(c *router.Config) { c.WGPrivateKey = "" }},
		{"long bridge name", func(c *router.Config) { c.Bridge = "a-very-long-bridge-name" }},
		{"tiny MTU", func(c *router.Config) { c.MTU = 100 }},
		{"local range outside", func(c *router.Config) { c.Local = []netip.Prefix{pfx("192.168.0.0/24")} }},
		{"VNI zero", func(c *router.Config) { c.VNI = 0 }},
	}
	if err := testConfig(router.TransportWireGuard, false).Validate(); err != nil {
		t.Fatalf("valid config: Validate() = %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(router.TransportWireGuard, false)
			tt.change(&cfg)
			if err := cfg.Validate(); err == nil {
				t.Errorf("Validate() = nil; want an error")
			}
			f := newFixture(t, router.Options{})
			if err := f.r.Set(cfg); err == nil {
				t.Errorf("Set accepted an invalid config")
			}
			if got := f.take(); len(got) != 0 {
				t.Errorf("invalid Set touched the kernel: %q", got)
			}
		})
	}
}

func TestVTEPMAC(t *testing.T) {
	seen := map[string]peer.ID{}
	for i := range 10000 {
		id := peer.ID(uint64(i) * 0x9e3779b97f4a7c15)
		mac := router.VTEPMAC(id)
		if mac[0]&0x02 == 0 || mac[0]&0x01 != 0 {
			t.Fatalf("VTEPMAC(%v) = %v: not locally administered unicast", id, mac)
		}
		if !slices.Equal(mac, router.VTEPMAC(id)) {
			t.Fatalf("VTEPMAC(%v) not deterministic", id)
		}
		if other, dup := seen[mac.String()]; dup {
			t.Fatalf("VTEPMAC(%v) = VTEPMAC(%v) = %v", id, other, mac)
		}
		seen[mac.String()] = id
	}
}

func TestErrorsAreRetried(t *testing.T) {
	f := newFixture(t, router.Options{})
	cfg := testConfig(router.TransportVXLAN, true)
	boom := errors.New("boom")
	f.k.FailRouteReplace(boom)
	err := f.r.Set(cfg)
	if !errors.Is(err, boom) {
		t.Fatalf("Set with failing routes = %v; want it to wrap %v", err, boom)
	}
	if got := f.r.PeerTransport(0xc); got != router.TransportVXLAN {
		t.Errorf("PeerTransport(c) after a partial failure = %q; want vxlan", got)
	}
	// Everything else was applied despite the failure.
	got := f.take()
	if !slices.Contains(got, "neigh replace 10.40.0.1 lladdr "+router.VTEPMAC(0xc).String()+" dev weft-vx") {
		t.Errorf("neighbours not applied next to a route failure:\n%s", strings.Join(got, "\n"))
	}
	f.k.FailRouteReplace(nil)
	got = f.set(t, cfg)
	if len(got) != 7 {
		t.Errorf("retry applied %d lines; want the 7 routes:\n%s", len(got), strings.Join(got, "\n"))
	}
}

func TestThousandPeers(t *testing.T) {
	f := newFixture(t, router.Options{})
	cfg := testConfig(router.TransportVXLAN, true)
	cfg.Range = pfx("10.0.0.0/8")
	cfg.BridgeAddr = pfx("10.0.0.1/8")
	cfg.Local = []netip.Prefix{pfx("10.0.0.0/18")}
	cfg.Peers = manyPeers(1000)
	start := time.Now()
	first := f.set(t, cfg)
	took := time.Since(start)
	// 1000 peers: 2 routes, 1 neighbour, 1 FDB entry each.
	if n := len(first); n < 4000 {
		t.Errorf("first Set issued %d operations; want at least 4000", n)
	}
	f.k.TakeListed()
	start = time.Now()
	if got := f.set(t, cfg); len(got) != 0 {
		t.Errorf("second Set issued %d operations; want 0", len(got))
	}
	noop := time.Since(start)
	if n := f.k.TakeListed(); n != 0 {
		t.Errorf("an unchanged Set listed %d kernel entries; want 0 (nothing changed since the last reconcile)", n)
	}

	// One peer goes and one arrives: only their entries change, and
	// nothing is read back from the kernel.
	gone := cfg.Peers[500]
	cfg.Peers = slices.Delete(slices.Clone(cfg.Peers), 500, 501)
	base := netip.AddrFrom4([4]byte{10, 251, 0, 0}) // outside the 1000 peers' ranges
	cfg.Peers = append(cfg.Peers, router.Peer{ID: 0x9999, Underlay: netip.MustParseAddr("172.21.0.1"),
		Bridge: base.Next(), Ranges: []netip.Prefix{netip.PrefixFrom(base, 18)}})
	start = time.Now()
	got := f.set(t, cfg)
	one := time.Since(start)
	if len(got) != 8 {
		t.Errorf("one peer replaced: %d operations; want 8 (2 routes, a neighbour and an FDB entry out and in):\n%s", len(got), strings.Join(got, "\n"))
	}
	for _, l := range got {
		if !strings.Contains(l, gone.Ranges[0].Addr().String()) && !strings.Contains(l, gone.Bridge.String()) &&
			!strings.Contains(l, gone.Underlay.String()) && !strings.Contains(l, "10.251.0.") && !strings.Contains(l, "172.21.0.1") {
			t.Errorf("one peer replaced: unrelated operation %q", l)
		}
	}
	if n := f.k.TakeListed(); n != 0 {
		t.Errorf("one peer replaced: listed %d kernel entries; want 0", n)
	}
	// The resync reads everything and finds nothing to repair.
	if err := f.r.Resync(); err != nil {
		t.Fatal(err)
	}
	if got := f.take(); len(got) != 0 {
		t.Errorf("resync after the incremental change issued %d operations; want 0:\n%s", len(got), strings.Join(got, "\n"))
	}
	if n := f.k.TakeListed(); n < 3000 {
		t.Errorf("resync listed %d kernel entries; want every route, neighbour and FDB entry (> 3000)", n)
	}
	t.Logf("1000 peers: first reconcile %v (%d ops), no-op reconcile %v, one peer replaced %v", took, len(first), noop, one)
}

// manyPeers returns n (≤ 1000) VXLAN peers, each owning one /18 of
// 10.0.0.0/8 above 10.0.0.0/18 (ours).
func manyPeers(n int) []router.Peer {
	var ps []router.Peer
	for i := 1; i <= n; i++ {
		base := netip.AddrFrom4([4]byte{10, byte(i >> 2), byte(i&3) << 6, 0})
		ps = append(ps, router.Peer{ID: peer.ID(0x100 + i), Underlay: netip.AddrFrom4([4]byte{172, 20, byte(i >> 8), byte(i)}),
			Bridge: base.Next(), Ranges: []netip.Prefix{netip.PrefixFrom(base, 18)}})
	}
	return ps
}

// BenchmarkReconcile1000 is the router's cost at 1,000 VXLAN peers on the
// fake kernel seam: one peer leaving or coming back per Set (the
// incremental path), and the periodic full resync (everything read and
// compared). Reports the p99 of each.
func BenchmarkReconcile1000(b *testing.B) {
	f := newFixture(b, router.Options{})
	cfg := testConfig(router.TransportVXLAN, true)
	cfg.Range, cfg.BridgeAddr = pfx("10.0.0.0/8"), pfx("10.0.0.1/8")
	cfg.Local = []netip.Prefix{pfx("10.0.0.0/18")}
	cfg.Peers = manyPeers(1000)
	if err := f.r.Set(cfg); err != nil {
		b.Fatal(err)
	}
	all := cfg.Peers
	p99 := func(b *testing.B, ds []time.Duration) {
		slices.Sort(ds)
		b.ReportMetric(float64(ds[min(len(ds)-1, len(ds)*99/100)].Microseconds())/1000, "p99-ms")
	}
	b.Run("one-peer-change", func(b *testing.B) {
		var ds []time.Duration
		for i := 0; b.Loop(); i++ {
			c := cfg
			if i%2 == 0 {
				c.Peers = all[:len(all)-1]
			}
			start := time.Now()
			if err := f.r.Set(c); err != nil {
				b.Fatal(err)
			}
			ds = append(ds, time.Since(start))
		}
		p99(b, ds)
	})
	b.Run("full-resync", func(b *testing.B) {
		var ds []time.Duration
		for b.Loop() {
			start := time.Now()
			if err := f.r.Resync(); err != nil {
				b.Fatal(err)
			}
			ds = append(ds, time.Since(start))
		}
		p99(b, ds)
	})
}

// startRun sets cfg, runs the router's loop until the test ends, and
// returns once a Set is left to Run's debounce (not applied at once: Run
// is running), with the config of that Set.
func startRun(t *testing.T, f *fixture, cfg router.Config) router.Config {
	t.Helper()
	f.set(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = f.r.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	i := 0
	testutil.Eventually(t, 10*time.Second, "Run to start", func() error {
		i++
		cfg.MTU = 1300 + i
		if err := f.r.Set(cfg); err != nil {
			return err
		}
		if f.r.MTU() == cfg.MTU {
			return fmt.Errorf("Set applied at once: Run not running yet")
		}
		return nil
	})
	return cfg
}

// TestSetNow: while Run runs, SetNow applies before it returns, where Set
// waits for the debounce.
func TestSetNow(t *testing.T) {
	f := newFixture(t, router.Options{ResyncInterval: time.Hour, Debounce: time.Hour})
	cfg := startRun(t, f, testConfig(router.TransportVXLAN, true))
	c := cfg
	c.MTU = 1402
	if err := f.r.SetNow(c); err != nil {
		t.Fatalf("SetNow: %v", err)
	}
	if got := f.r.MTU(); got != 1402 {
		t.Errorf("MTU() = %d right after SetNow; want 1402", got)
	}
}

// TestSetUnchangedSkipped: while Run runs, a Set equal to the state
// applied without error does nothing (an idle daemon hands the same state
// every 2 s); one after a failed reconcile is not skipped, and a changed
// one applies.
func TestSetUnchangedSkipped(t *testing.T) {
	f := newFixture(t, router.Options{ResyncInterval: time.Hour, Debounce: time.Millisecond})
	cfg := startRun(t, f, testConfig(router.TransportVXLAN, true))
	testutil.Eventually(t, 10*time.Second, "the debounced Set applied", func() error {
		if got := f.r.MTU(); got != cfg.MTU {
			return fmt.Errorf("MTU %d; want %d", got, cfg.MTU)
		}
		return nil
	})
	before := f.r.Skipped()
	same := cfg
	same.Peers = slices.Clone(cfg.Peers) // equal, not the same backing array
	for range 3 {
		if err := f.r.Set(same); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.r.Skipped() - before; got != 3 {
		t.Fatalf("%d of 3 unchanged Sets skipped", got)
	}

	// A failed reconcile (a new peer range whose route the kernel
	// refuses): the same state set again is not skipped.
	failed := cfg
	failed.Peers = slices.Clone(cfg.Peers)
	failed.Peers[0].Ranges = append(slices.Clone(failed.Peers[0].Ranges), netip.MustParsePrefix("10.44.0.0/16"))
	f.k.FailRouteReplace(errors.New("injected"))
	if err := f.r.SetNow(failed); err == nil {
		t.Fatal("SetNow with failing routes succeeded")
	}
	f.k.FailRouteReplace(nil)
	before = f.r.Skipped()
	if err := f.r.Set(failed); err != nil {
		t.Fatal(err)
	}
	if got := f.r.Skipped() - before; got != 0 {
		t.Fatal("a Set after a failed reconcile was skipped")
	}

	// A change applies (through the debounce).
	before = f.r.Skipped()
	cfg.MTU = 1280
	if err := f.r.Set(cfg); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the changed MTU applied", func() error {
		if got := f.r.MTU(); got != 1280 {
			return fmt.Errorf("MTU %d", got)
		}
		return nil
	})
	if f.r.Skipped() != before {
		t.Fatal("a changed Set was skipped")
	}
}

// TestSamePeer: samePeer tells apart two peers that differ in any one
// field, so a field added to Peer and not compared fails here (an unchanged
// Set is skipped on its word).
func TestSamePeer(t *testing.T) {
	base := router.Peer{}
	if !router.SamePeer(base, base) {
		t.Fatal("a zero peer differs from itself")
	}
	typ := reflect.TypeFor[router.Peer]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		other := base
		v := reflect.ValueOf(&other).Elem().Field(i)
		switch x := v.Addr().Interface().(type) {
		case *peer.ID:
			*x = 7
		case *string:
			*x = "x"
		case *uint16:
			*x = 7
		case *netip.Addr:
			*x = netip.MustParseAddr("192.0.2.7")
		case *[]netip.Prefix:
			*x = []netip.Prefix{netip.MustParsePrefix("10.32.0.0/24")}
		case *[]peer.ID:
			*x = []peer.ID{7}
		default:
			t.Fatalf("field %s of type %s: teach this test (and samePeer) about it", f.Name, f.Type)
		}
		if router.SamePeer(base, other) || router.SamePeer(other, base) {
			t.Errorf("peers differing in %s compare the same", f.Name)
		}
		if !router.SamePeer(other, other) {
			t.Errorf("a peer with %s set differs from itself", f.Name)
		}
	}
}

// blockingWG is a fake WireGuard device whose Configure, once armed,
// signals entered and waits for release: a reconcile held in the device.
type blockingWG struct {
	*routertest.WG
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (b *blockingWG) Configure(privateKey string, listenPort int, peers []router.WGPeer) error {
	if b.armed.Load() {
		b.entered <- struct{}{}
		<-b.release
	}
	return b.WG.Configure(privateKey, listenPort, peers)
}

func TestStatsDuringReconcile(t *testing.T) {
	k := routertest.NewKernel()
	k.SetUnderlay(underlayA, routertest.Underlay("eth0", 1500, "192.168.1.10/24"))
	b := &blockingWG{WG: routertest.NewWG(k), entered: make(chan struct{}), release: make(chan struct{})}
	inner := b.WG.Factory()
	r, err := router.New(router.Options{Kernel: k, WireGuard: func(ctx context.Context, cfg router.WGDeviceConfig) (router.WGDevice, error) {
		if _, err := inner(ctx, cfg); err != nil {
			return nil, err
		}
		return b, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(router.TransportWireGuard, false)
	if err := r.Set(cfg); err != nil {
		t.Fatalf("Set: %v", err)
	}
	hs := time.Unix(1700000000, 0)
	b.SetStats(map[string]router.WGPeerStats{"pubB": {LastHandshake: hs, RxBytes: 10}})
	// A reconcile that changes the peers, held inside the device.
	b.armed.Store(true)
	cfg.Peers = cfg.Peers[:1]
	done := make(chan error, 1)
	go func() { done <- r.Set(cfg) }()
	<-b.entered
	got := make(chan map[peer.ID]router.PeerStats, 1)
	go func() { got <- r.Stats() }()
	select {
	case st := <-got:
		if st[0xb].RxBytes != 10 {
			t.Errorf("Stats during a reconcile = %+v; want pubB's counters", st)
		}
	case <-time.After(30 * time.Second): // a deadlock detector, not a timing bound
		t.Error("Stats waited for the reconcile in progress")
	}
	b.armed.Store(false)
	close(b.release)
	if err := <-done; err != nil {
		t.Errorf("Set: %v", err)
	}
}
