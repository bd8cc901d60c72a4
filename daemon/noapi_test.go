package daemon

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/weftmesh/weft/api/client"
	"github.com/weftmesh/weft/gossip"
	"github.com/weftmesh/weft/gossip/gossiptest"
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
	dir := t.TempDir()
	var nw gossiptest.Network
	addr := netip.MustParseAddr("10.200.0.1")
	tr := nw.NewTransportAt("p0", netip.AddrPortFrom(addr, 6783))
	k := routertest.NewKernel()
	k.SetUnderlay(addr, routertest.Underlay("eth0", 1500, "10.200.0.0/16"))
	wgf := routertest.NewWG(k).Factory()

	cfg := DefaultConfig()
	cfg.Name = "p0"
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
