package daemon

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/weftmesh/weft/api/client"
	"github.com/weftmesh/weft/gossip"
	"github.com/weftmesh/weft/gossip/gossiptest"
	"github.com/weftmesh/weft/peer"
	"github.com/weftmesh/weft/router"
	"github.com/weftmesh/weft/router/routertest"
)

func TestNoAPIValidate(t *testing.T) {
	c := DefaultConfig()
	c.Socket = ""
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--socket is empty") {
		t.Fatalf("empty socket without NoAPI: %v; want --socket is empty", err)
	}
	c.NoAPI = true
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--http-addr") {
		t.Fatalf("NoAPI with the default HTTPAddr: %v; want an --http-addr complaint", err)
	}
	c.HTTPAddr = ""
	if err := c.Validate(); err != nil {
		t.Fatalf("NoAPI, no socket, no HTTP: %v", err)
	}
}

// TestNoAPIRun: a peer with NoAPI runs without a control socket (none is
// created even when Socket names one) and serves allocations through its
// methods; Run returns when its context ends.
func TestNoAPIRun(t *testing.T) {
	cfg := noAPIConfig(t, new(gossiptest.Network), "p0", netip.MustParseAddr("10.200.0.1"))
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()

	actx, acancel := context.WithTimeout(ctx, time.Minute)
	defer acancel()
	a, err := d.Allocate(actx, client.AllocateRequest{ID: "ctr-1"})
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	if _, err := netip.ParsePrefix(a.Address); err != nil {
		t.Fatalf("allocate: address %q: %v", a.Address, err)
	}
	if _, err := os.Stat(cfg.Socket); !os.IsNotExist(err) {
		t.Fatalf("control socket %s: stat err %v; want it absent", cfg.Socket, err)
	}
}

// noAPIConfig is a peer on nw at addr with a fake kernel, no API, no DNS
// and no probe: no real socket at all.
func noAPIConfig(t *testing.T, nw *gossiptest.Network, name string, addr netip.Addr) Config {
	dir := t.TempDir()
	tr := nw.NewTransportAt(name, netip.AddrPortFrom(addr, 6783))
	k := routertest.NewKernel()
	k.SetUnderlay(addr, routertest.Underlay("eth0", 1500, netip.PrefixFrom(addr, 16).Masked().String()))
	wgf := routertest.NewWG(k).Factory()

	cfg := DefaultConfig()
	cfg.Name = name
	cfg.DataDir = dir
	cfg.Socket = filepath.Join(dir, "sock") // ignored with NoAPI
	cfg.HTTPAddr = ""
	cfg.NoAPI = true
	cfg.NoDNS = true
	cfg.ProbePort = 0
	cfg.Insecure = true
	cfg.Listen = addr.String() + ":6783"
	cfg.Advertise = addr.String()
	cfg.Gossip = func(g *gossip.Config) {
		g.Memberlist = func(mc *memberlist.Config) { mc.Transport = tr }
	}
	cfg.Router = func(o *router.Options) { o.Kernel, o.WireGuard = k, wgf }
	return cfg
}

// TestUpdateMetaDurable: a metadata update waiting for another one (which
// may wait seconds for memberlist) is durably blocked in a synctest
// bubble, so virtual time advances and the scale simulator does not
// stall. With a sync.Mutex the waiter is not durably blocked: the bubble
// never idles, the holder's sleep never ends and this test hangs.
func TestUpdateMetaDurable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, err := New(noAPIConfig(t, new(gossiptest.Network), "p0", netip.MustParseAddr("10.200.0.1")))
		if err != nil {
			t.Fatal(err)
		}
		defer d.closeAll()
		held := make(chan struct{})
		var order []string
		go func() {
			_ = d.updateMeta(func(m *peer.Meta) {
				close(held)
				time.Sleep(5 * time.Second) // as UpdateNode may wait for its broadcast
				order = append(order, "first")
			})
		}()
		<-held
		done := make(chan error)
		go func() {
			done <- d.updateMeta(func(m *peer.Meta) {
				order = append(order, "second")
				m.WGPort = 1234
			})
		}()
		start := time.Now()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if waited := time.Since(start); waited < 5*time.Second {
			t.Errorf("second update ran after %v; want it to wait for the first (5 s)", waited)
		}
		if len(order) != 2 || order[0] != "first" || order[1] != "second" {
			t.Errorf("order %v; want [first second]", order)
		}
		if got := d.mesh.Peers()[0].Meta.WGPort; got != 1234 {
			t.Errorf("WGPort %d after the update; want 1234", got)
		}
	})
}
