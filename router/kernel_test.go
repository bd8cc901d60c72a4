package router_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/router"
	"github.com/weftmesh/weft/router/routertest"
)

func TestKernelPodsPing(t *testing.T) {
	for _, transport := range []string{router.TransportVXLAN, router.TransportDirect, router.TransportAuto} {
		t.Run(transport, func(t *testing.T) {
			b := newBed(t, 3, transport, router.Options{})
			for _, hn := range b.hosts {
				base := hn.cfg.BridgeAddr.Addr().As4()
				b.addPod(hn, netip.AddrFrom4([4]byte{base[0], base[1], 0, 5}))
				b.addPod(hn, netip.AddrFrom4([4]byte{base[0], base[1], 1, 6}))
			}
			start := time.Now()
			pairs := b.pingAll(t)
			t.Logf("%s: %d pod pairs ping each other (%v)", transport, pairs, time.Since(start))
			want := transport
			if transport == router.TransportAuto {
				want = router.TransportDirect // all on one subnet
			}
			for _, o := range b.hosts[1:] {
				if got := b.hosts[0].r.PeerTransport(o.cfg.ID); got != want {
					t.Errorf("PeerTransport(h%d) = %q; want %q", o.Index, got, want)
				}
			}
			// The host itself reaches remote pods from its bridge address.
			if err := ping(b.hosts[0].NS, b.hosts[2].pods[0].addr); err != nil {
				t.Errorf("host to remote pod: %v", err)
			}
			// Applying the same config again issues no mutation: what the
			// real kernel reports equals the plan.
			for _, hn := range b.hosts {
				t.Logf("host %d transcript:\n%s", hn.Index, strings.Join(hn.rec.Take(), "\n"))
				if err := hn.r.Set(hn.cfg); err != nil {
					t.Fatalf("repeated Set: %v", err)
				}
				if got := hn.rec.Take(); len(got) != 0 {
					t.Errorf("host %d: repeated Set mutated the kernel: %q", hn.Index, got)
				}
			}
			// A relaunched control plane (a fresh Router, as after kill -9)
			// finds everything in place and touches nothing.
			rec := routertest.NewRecorder(b.hosts[0].kernel)
			fresh, err := router.New(router.Options{Kernel: rec, WireGuard: router.NetNSWGFactory(b.hosts[0].kernel)})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if err := fresh.Set(b.hosts[0].cfg); err != nil {
				t.Fatalf("relaunched Set: %v", err)
			}
			if got := rec.Take(); len(got) != 0 {
				t.Errorf("relaunched router mutated the kernel: %q", got)
			}
			if transport == router.TransportVXLAN {
				assertTxPackets(t, b, b.hosts[0], b.hosts[0].cfg.VXIface)
			}
		})
	}
}

// assertTxPackets checks that traffic went out through dev on hn.
func assertTxPackets(t *testing.T, b *bed, hn *host, dev string) {
	t.Helper()
	b.handle(hn.NS, func(h *netlink.Handle) error {
		l, err := h.LinkByName(dev)
		if err != nil {
			return err
		}
		if st := l.Attrs().Statistics; st == nil || st.TxPackets == 0 {
			return fmt.Errorf("no packets sent through %s", dev)
		}
		return nil
	})
}

func TestKernelAutoInsecureMixed(t *testing.T) {
	// h1, h2 share a subnet (direct); h3 is behind a router (VXLAN).
	b := newRoutedBed(t, 3, 1, router.TransportAuto, router.Options{})
	for _, hn := range b.hosts {
		base := hn.cfg.BridgeAddr.Addr().As4()
		b.addPod(hn, netip.AddrFrom4([4]byte{base[0], base[1], 0, 5}))
	}
	pairs := b.pingAll(t)
	t.Logf("auto across subnets: %d pod pairs ping each other", pairs)
	h1, h2, h3 := b.hosts[0], b.hosts[1], b.hosts[2]
	for _, c := range []struct {
		from *host
		to   *host
		want string
	}{{h1, h2, "direct"}, {h1, h3, "vxlan"}, {h3, h1, "vxlan"}, {h3, h2, "vxlan"}} {
		if got := c.from.r.PeerTransport(c.to.cfg.ID); got != c.want {
			t.Errorf("h%d PeerTransport(h%d) = %q; want %q", c.from.Index, c.to.Index, got, c.want)
		}
	}
	assertTxPackets(t, b, h3, h3.cfg.VXIface)
	if got := h1.r.MTU(); got != 1450 {
		t.Errorf("MTU() = %d; want 1450 (VXLAN may be used)", got)
	}
}

func routesOf(t *testing.T, hn *host) []router.Route {
	t.Helper()
	rs, err := hn.kernel.RouteList()
	if err != nil {
		t.Fatalf("RouteList: %v", err)
	}
	return rs
}

func TestKernelDriftRepairAndLeave(t *testing.T) {
	b := newBed(t, 3, router.TransportVXLAN, router.Options{ResyncInterval: 200 * time.Millisecond, Debounce: 20 * time.Millisecond})
	for _, hn := range b.hosts {
		base := hn.cfg.BridgeAddr.Addr().As4()
		b.addPod(hn, netip.AddrFrom4([4]byte{base[0], base[1], 0, 5}))
	}
	b.pingAll(t)
	h1, h2 := b.hosts[0], b.hosts[1]
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = h1.r.Run(ctx) }()
	defer func() { cancel(); wg.Wait() }()

	// Delete h2's range route and its neighbour by hand on h1.
	dst := h2.cfg.Local[0]
	deleted := 0
	b.handle(h1.NS, func(h *netlink.Handle) error {
		rs, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: router.RouteProtocol},
			netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			return err
		}
		for _, r := range rs {
			if r.Dst != nil && r.Dst.String() == dst.String() {
				if err := h.RouteDel(&r); err != nil {
					return err
				}
				deleted++
			}
		}
		vx, err := h.LinkByName(h1.cfg.VXIface)
		if err != nil {
			return err
		}
		return h.NeighDel(&netlink.Neigh{LinkIndex: vx.Attrs().Index, Family: netlink.FAMILY_V4,
			IP: h2.cfg.BridgeAddr.Addr().AsSlice()})
	})
	// Not "absent now": the 200 ms resync may already have put it back.
	if deleted != 1 {
		t.Fatalf("deleted %d routes to %v; want 1", deleted, dst)
	}
	start := time.Now()
	testutil.Eventually(t, 5*time.Second, "route restored", func() error {
		if !hasRoute(t, h1, dst) {
			return fmt.Errorf("route %v not restored", dst)
		}
		return nil
	})
	t.Logf("route restored after %v (resync 200ms)", time.Since(start))
	testutil.Eventually(t, 5*time.Second, "h1's pod to ping h2's", func() error { return ping(h1.pods[0].ns, h2.pods[0].addr) })

	// h2 leaves: h1 drops its routes (debounced Set while Run runs).
	cfg := h1.cfg
	cfg.Peers = nil
	for _, p := range h1.cfg.Peers {
		if p.ID != h2.cfg.ID {
			cfg.Peers = append(cfg.Peers, p)
		}
	}
	if err := h1.r.Set(cfg); err != nil {
		t.Fatalf("Set: %v", err)
	}
	testutil.Eventually(t, 5*time.Second, "departed peer's route removed", func() error {
		if hasRoute(t, h1, dst) {
			return fmt.Errorf("route %v of the departed peer still present", dst)
		}
		return nil
	})
	// Its range now hits the unreachable route; h3 still works.
	if err := ping(h1.pods[0].ns, h2.pods[0].addr); err == nil {
		t.Errorf("pod of a departed peer still reachable")
	}
	if err := ping(h1.pods[0].ns, b.hosts[2].pods[0].addr); err != nil {
		t.Errorf("remaining peer: %v", err)
	}
}

func hasRoute(t *testing.T, hn *host, dst netip.Prefix) bool {
	t.Helper()
	for _, r := range routesOf(t, hn) {
		if r.Dst == dst && !r.Unreachable {
			return true
		}
	}
	return false
}

func TestKernelMasqueradeAndReset(t *testing.T) {
	b := newBed(t, 2, router.TransportDirect, router.Options{})
	h1 := b.hosts[0]
	p := b.addPod(h1, netip.MustParseAddr("10.32.0.5"))
	inet, server := b.AddInternet()

	var ln net.Listener
	if err := testutil.InNetNS(testutil.NetNSPath(inet), func() (err error) { ln, err = net.Listen("tcp4", server.String()+":0"); return }); err != nil {
		t.Fatalf("listen in internet namespace: %v", err)
	}
	defer ln.Close()
	seen := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		seen <- c.RemoteAddr().(*net.TCPAddr).IP.String()
		_, _ = io.Copy(io.Discard, c)
		c.Close()
	}()
	var conn net.Conn
	testutil.Eventually(t, 10*time.Second, "the pod to connect to the internet server", func() error {
		return testutil.InNetNS(testutil.NetNSPath(p.ns), func() (err error) {
			conn, err = net.DialTimeout("tcp4", ln.Addr().String(), time.Second)
			return err
		})
	})
	conn.Close()
	select {
	case got := <-seen:
		if got != h1.Addr.String() {
			t.Errorf("server saw %s; want the host's underlay address %v", got, h1.Addr)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("server saw no connection")
	}

	// The standard tool reads the table back.
	nft := nsRun(t, h1.NS, "nft", "list", "table", "ip", "weft")
	t.Logf("nft list table ip weft:\n%s", nft)
	for _, want := range []string{"hook postrouting", "ip saddr 10.32.0.0/12 ip daddr != 10.32.0.0/12", "masquerade"} {
		if !strings.Contains(nft, want) {
			t.Errorf("nft table lacks %q", want)
		}
	}

	// Reset leaves nothing of weft behind.
	for _, hn := range b.hosts {
		if err := hn.r.Reset(); err != nil {
			t.Fatalf("Reset: %v", err)
		}
		for _, name := range []string{hn.cfg.Bridge, hn.cfg.VXIface, hn.cfg.WGIface} {
			if _, err := hn.kernel.LinkGet(name); !errors.Is(err, router.ErrNotFound) {
				t.Errorf("host %d: link %s after Reset: %v", hn.Index, name, err)
			}
		}
		if rs := routesOf(t, hn); len(rs) != 0 {
			t.Errorf("host %d: routes after Reset: %v", hn.Index, rs)
		}
		if m, err := hn.kernel.NftGet(); err != nil || m.IsValid() {
			t.Errorf("host %d: nft table after Reset: %v, %v", hn.Index, m, err)
		}
	}
}

func TestKernelThousandPeers(t *testing.T) {
	// One real host, 1000 VXLAN peers that exist only as desired state:
	// the cost of a full reconcile and of a no-op resync in the kernel.
	b := newUnderlay(t, 1, 0)
	hn := b.hosts[0]
	k, err := router.NewNetlinkKernel(router.NetlinkOptions{NetNSPath: hn.NSPath()})
	if err != nil {
		t.Fatalf("NewNetlinkKernel: %v", err)
	}
	hn.kernel = k
	rec := routertest.NewRecorder(k)
	r, err := router.New(router.Options{Kernel: rec})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = r.Reset(); k.Close() })
	cfg := router.DefaultConfig()
	cfg.ID, cfg.Transport, cfg.Insecure, cfg.Underlay = 1, router.TransportVXLAN, true, hn.Addr
	cfg.Range, cfg.BridgeAddr = netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("10.0.0.1/8")
	cfg.Local = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/18")}
	cfg.Peers = manyPeers(1000)
	start := time.Now()
	if err := r.Set(cfg); err != nil {
		t.Fatalf("Set: %v", err)
	}
	first, ops := time.Since(start), len(rec.Take())
	start = time.Now()
	if err := r.Set(cfg); err != nil {
		t.Fatalf("Set again: %v", err)
	}
	again := time.Since(start)
	if got := rec.Take(); len(got) != 0 {
		t.Errorf("no-op Set issued %d operations: %q", len(got), got[:min(len(got), 5)])
	}
	if n := len(routesOf(t, hn)); n != 2002 {
		t.Errorf("%d weft routes in the kernel; want 2002", n)
	}
	t.Logf("1000 peers over VXLAN in the kernel: first reconcile %v (%d ops), no-op reconcile %v", first, ops, again)

	// Churn: one peer leaves or comes back per Set (the incremental path:
	// 4 operations, nothing read back), against the periodic full resync
	// (every route, neighbour and FDB entry read and compared).
	var incr, full []time.Duration
	gone := cfg.Peers[len(cfg.Peers)-1]
	for i := range 40 {
		if i%2 == 0 {
			cfg.Peers = cfg.Peers[:len(cfg.Peers)-1]
		} else {
			cfg.Peers = append(cfg.Peers, gone)
		}
		start := time.Now()
		if err := r.Set(cfg); err != nil {
			t.Fatalf("churn Set: %v", err)
		}
		incr = append(incr, time.Since(start))
		if got := rec.Take(); len(got) != 4 {
			t.Errorf("a peer %s: %d operations; want 4 (2 routes, its neighbour and FDB entry):\n%s",
				map[bool]string{true: "left", false: "came back"}[i%2 == 0], len(got), strings.Join(got, "\n"))
		}
	}
	for range 10 {
		start := time.Now()
		if err := r.Resync(); err != nil {
			t.Fatalf("Resync: %v", err)
		}
		full = append(full, time.Since(start))
	}
	if got := rec.Take(); len(got) != 0 {
		t.Errorf("resync after the churn issued %d operations: %q", len(got), got[:min(len(got), 5)])
	}
	if n := len(routesOf(t, hn)); n != 2002 {
		t.Errorf("%d weft routes in the kernel after the churn; want 2002", n)
	}
	t.Logf("1000 peers, one peer changing: incremental Set p50 %v p99 %v; full resync p50 %v p99 %v",
		quantile(incr, 0.5), quantile(incr, 0.99), quantile(full, 0.5), quantile(full, 0.99))
}

// quantile returns the q-quantile of ds (nearest rank).
func quantile(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// TestKernelLocalAddr puts the node-local address (Config.LocalAddr) up: a
// dummy device (a bridge where the kernel has no dummy driver) created
// once and untouched by the same Set again (a restart), the address moved
// when it changes, a foreign address removed, the device rebuilt when
// something else took its name, removed when the address is dropped, and
// gone after Reset.
func TestKernelLocalAddr(t *testing.T) {
	b := newBed(t, 1, router.TransportDirect, router.Options{})
	hn := b.hosts[0]
	const dev = "weft-dns"
	in := func(fn func() error) {
		t.Helper()
		if err := testutil.InNetNS(hn.NSPath(), fn); err != nil {
			t.Fatal(err)
		}
	}
	state := func() (kind string, up bool, addrs []string) {
		in(func() error {
			l, err := netlink.LinkByName(dev)
			if err != nil {
				return err
			}
			kind, up = l.Type(), l.Attrs().RawFlags&1 != 0
			as, err := netlink.AddrList(l, netlink.FAMILY_V4)
			for _, a := range as {
				addrs = append(addrs, a.IPNet.String())
			}
			return err
		})
		return kind, up, addrs
	}
	hn.rec.Take()
	steps := []struct {
		name        string
		do          func() error
		addr        string
		wantChanged bool
	}{
		{"create", nil, "169.254.20.10", true},
		{"again (a restart)", nil, "169.254.20.10", false},
		{"address changed", nil, "169.254.20.11", true},
		{"foreign address added by hand", func() error {
			l, err := netlink.LinkByName(dev)
			if err != nil {
				return err
			}
			return netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 9, 9, 9), Mask: net.CIDRMask(24, 32)}})
		}, "169.254.20.11", true},
		{"device replaced by a veth", func() error {
			l, err := netlink.LinkByName(dev)
			if err != nil {
				return err
			}
			if err := netlink.LinkDel(l); err != nil {
				return err
			}
			attrs := netlink.NewLinkAttrs()
			attrs.Name = dev
			return netlink.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: dev + "-p"})
		}, "169.254.20.11", true},
	}
	for _, s := range steps {
		if s.do != nil {
			in(s.do)
		}
		hn.cfg.LocalAddr, hn.cfg.LocalIface = netip.MustParseAddr(s.addr), dev
		if err := hn.r.Set(hn.cfg); err != nil {
			t.Fatalf("%s: Set: %v", s.name, err)
		}
		if s.do != nil { // drift is repaired by the full resync
			if err := hn.r.Resync(); err != nil {
				t.Fatalf("%s: Resync: %v", s.name, err)
			}
		}
		if changed := len(hn.rec.Take()) > 0; changed != s.wantChanged {
			t.Errorf("%s: Set changed the kernel = %v; want %v", s.name, changed, s.wantChanged)
		}
		kind, up, got := state()
		if (kind != "dummy" && kind != "bridge") || !up || strings.Join(got, ",") != s.addr+"/32" {
			t.Errorf("%s: %s is %s up=%v with %v; want a dummy (or a bridge without the dummy driver), up, with %s/32", s.name, dev, kind, up, got, s.addr)
		}
	}
	hn.cfg.LocalAddr = netip.Addr{}
	if err := hn.r.Set(hn.cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := hn.kernel.LinkGet(dev); !errors.Is(err, router.ErrNotFound) {
		t.Errorf("%s after the local address was dropped: %v", dev, err)
	}
	hn.cfg.LocalAddr = netip.MustParseAddr("169.254.20.10")
	if err := hn.r.Set(hn.cfg); err != nil {
		t.Fatal(err)
	}
	if err := hn.r.Reset(); err != nil {
		t.Fatal(err)
	}
	if _, err := hn.kernel.LinkGet(dev); !errors.Is(err, router.ErrNotFound) {
		t.Errorf("%s after Reset: %v", dev, err)
	}
}
