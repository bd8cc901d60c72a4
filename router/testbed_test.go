package router_test

// A throwaway test bed for kernel tests (root only): a "switch" namespace
// with a bridge, host namespaces joined to it by veths (the underlay
// 192.168.77.0/24 exists only inside these namespaces), a real Router per
// host, "pods" (namespaces with a veth into the host's weft bridge,
// addr/12 and a default route via the bridge address), and an "internet"
// namespace on the underlay.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/weftmesh/weft/peer"
	"github.com/weftmesh/weft/router"
	"github.com/weftmesh/weft/router/routertest"
	"github.com/weftmesh/weft/router/wg"
)

const datapathArg = "router-test-datapath"

// datapathMain runs the userspace WireGuard datapath (re-exec of the test binary).
func datapathMain(args []string) int {
	fs := flag.NewFlagSet("datapath", flag.ContinueOnError)
	iface := fs.String("iface", "", "interface name")
	mtu := fs.Int("mtu", 1420, "MTU in bytes")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := wg.RunDatapath(context.Background(), *iface, *mtu, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
}

type bed struct {
	t      *testing.T
	prefix string // unique per run: "wt" + 4 hex
	sw     string // switch namespace name
	hosts  []*host
}

type host struct {
	n        int
	ns       string
	underlay netip.Addr
	kernel   *router.NetlinkKernel
	rec      *routertest.Recorder // records the router's mutations of kernel
	r        *router.Router
	cfg      router.Config
	pods     []pod
}

type pod struct {
	ns   string
	addr netip.Addr
}

func nsPath(name string) string { return "/var/run/netns/" + name }

// inNS runs fn on a locked thread inside namespace path.
func inNS(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := netns.GetFromPath(path)
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			errc <- err
			return
		}
		err = fn()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

func (b *bed) newNS(name string) string {
	b.t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		ns, err := netns.NewNamed(name)
		if err != nil {
			errc <- err
			return
		}
		ns.Close()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		b.t.Fatalf("netns add %s: %v", name, err)
	}
	b.t.Cleanup(func() { _ = netns.DeleteNamed(name) })
	// loopback up
	b.handle(name, func(h *netlink.Handle) error {
		lo, err := h.LinkByName("lo")
		if err != nil {
			return err
		}
		return h.LinkSetUp(lo)
	})
	return name
}

// handle runs fn with a netlink handle in namespace name.
func (b *bed) handle(name string, fn func(*netlink.Handle) error) {
	b.t.Helper()
	ns, err := netns.GetFromPath(nsPath(name))
	if err != nil {
		b.t.Fatalf("open netns %s: %v", name, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		b.t.Fatalf("netlink handle in %s: %v", name, err)
	}
	defer h.Close()
	if err := fn(h); err != nil {
		b.t.Fatalf("in netns %s: %v", name, err)
	}
}

// veth creates a veth pair: aName in namespace a, bName in namespace b.
func (b *bed) veth(a, aName, bns, bName string, master string, mtu int) {
	b.t.Helper()
	peerNS, err := netns.GetFromPath(nsPath(bns))
	if err != nil {
		b.t.Fatalf("open netns %s: %v", bns, err)
	}
	defer peerNS.Close()
	b.handle(a, func(h *netlink.Handle) error {
		attrs := netlink.NewLinkAttrs()
		attrs.Name, attrs.MTU = aName, mtu
		if master != "" {
			br, err := h.LinkByName(master)
			if err != nil {
				return fmt.Errorf("master %s: %w", master, err)
			}
			attrs.MasterIndex = br.Attrs().Index
		}
		v := &netlink.Veth{LinkAttrs: attrs, PeerName: bName, PeerNamespace: netlink.NsFd(peerNS)}
		if err := h.LinkAdd(v); err != nil {
			return fmt.Errorf("veth add %s/%s: %w", aName, bName, err)
		}
		l, err := h.LinkByName(aName)
		if err != nil {
			return err
		}
		return h.LinkSetUp(l)
	})
}

// addrUp gives dev in ns an address, brings it up, and adds a default route
// via gw if valid.
func (b *bed) addrUp(ns, dev string, a netip.Prefix, gw netip.Addr) {
	b.t.Helper()
	b.handle(ns, func(h *netlink.Handle) error {
		l, err := h.LinkByName(dev)
		if err != nil {
			return err
		}
		if err := h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(a.Bits(), 32)}}); err != nil {
			return fmt.Errorf("addr add %v: %w", a, err)
		}
		if err := h.LinkSetUp(l); err != nil {
			return err
		}
		if gw.IsValid() {
			return h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: gw.AsSlice()})
		}
		return nil
	})
}

// newUnderlay builds the switch and n hosts with underlay addresses
// 192.168.77.<i>/24 on their eth0, and nothing else. The last offLink hosts
// sit on a second subnet, 192.168.78.<i>/24, that the switch namespace
// routes (gateways .254 on both sides).
func newUnderlay(t *testing.T, n, offLink int) *bed {
	t.Helper()
	needRoot(t)
	var rb [2]byte
	_, _ = rand.Read(rb[:])
	b := &bed{t: t, prefix: "wt" + hex.EncodeToString(rb[:])}
	b.sw = b.newNS(b.prefix + "-sw")
	b.handle(b.sw, func(h *netlink.Handle) error {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = "br0"
		if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
			return err
		}
		l, err := h.LinkByName("br0")
		if err != nil {
			return err
		}
		return h.LinkSetUp(l)
	})
	b.addrUp(b.sw, "br0", netip.MustParsePrefix("192.168.77.254/24"), netip.Addr{})
	if offLink > 0 {
		b.handle(b.sw, func(h *netlink.Handle) error {
			attrs := netlink.NewLinkAttrs()
			attrs.Name = "br1"
			return h.LinkAdd(&netlink.Bridge{LinkAttrs: attrs})
		})
		b.addrUp(b.sw, "br1", netip.MustParsePrefix("192.168.78.254/24"), netip.Addr{})
		if err := inNS(nsPath(b.sw), func() error {
			return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
		}); err != nil {
			t.Fatalf("switch ip_forward: %v", err)
		}
	}
	for i := range n {
		subnet, br := byte(77), "br0"
		if i >= n-offLink {
			subnet, br = 78, "br1"
		}
		hn := &host{n: i + 1, ns: b.newNS(fmt.Sprintf("%s-h%d", b.prefix, i+1)),
			underlay: netip.AddrFrom4([4]byte{192, 168, subnet, byte(i + 1)})}
		b.veth(b.sw, fmt.Sprintf("v%d", i+1), hn.ns, "eth0", br, 1500)
		b.addrUp(hn.ns, "eth0", netip.PrefixFrom(hn.underlay, 24), netip.AddrFrom4([4]byte{192, 168, subnet, 254}))
		b.hosts = append(b.hosts, hn)
	}
	return b
}

// newBed builds the switch and n hosts with a Router each for transport:
// host i owns 10.(32+4i).0.0/14 with bridge 10.(32+4i).0.1/12, and has
// every other host as a peer.
func newBed(t *testing.T, n int, transport string, opts router.Options) *bed {
	t.Helper()
	return newRoutedBed(t, n, 0, transport, opts)
}

// newRoutedBed is newBed with the last offLink hosts on another subnet.
func newRoutedBed(t *testing.T, n, offLink int, transport string, opts router.Options) *bed {
	t.Helper()
	b := newUnderlay(t, n, offLink)
	pubs := make([]string, n)
	for i, hn := range b.hosts {
		key, err := wgGenerateKey()
		if err != nil {
			t.Fatalf("generate key: %v", err)
		}
		pubs[i] = key.pub
		k, err := router.NewNetlinkKernel(router.NetlinkOptions{NetNSPath: nsPath(hn.ns)})
		if err != nil {
			t.Fatalf("NewNetlinkKernel: %v", err)
		}
		o := opts
		rec := routertest.NewRecorder(k)
		o.Kernel, o.WireGuard = rec, router.NetNSWGFactory(k)
		o.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})).With("host", i+1)
		o.DatapathCommand = []string{"/proc/self/exe", datapathArg}
		r, err := router.New(o)
		if err != nil {
			t.Fatalf("router.New: %v", err)
		}
		hn.kernel, hn.rec, hn.r = k, rec, r
		base := netip.AddrFrom4([4]byte{10, byte(32 + 4*i), 0, 0})
		cfg := router.DefaultConfig()
		cfg.ID = peer.ID(0x1000 + i)
		cfg.Range = netip.MustParsePrefix("10.32.0.0/12")
		cfg.BridgeAddr = netip.PrefixFrom(base.Next(), 12)
		cfg.Local = []netip.Prefix{netip.PrefixFrom(base, 14)}
		cfg.Transport = transport
		cfg.Insecure = transport != router.TransportWireGuard
		cfg.Underlay = hn.underlay
		cfg.WGIface = b.prefix + fmt.Sprintf("-wg%d", i+1) // /var/run/wireguard is shared by all namespaces
		cfg.WGPrivateKey = key.priv
		cfg.VNI = 42
		hn.cfg = cfg
		t.Cleanup(func() {
			if err := r.Reset(); err != nil {
				t.Errorf("cleanup Reset host %d: %v", hn.n, err)
			}
			k.Close()
		})
	}
	for _, hn := range b.hosts {
		for _, o := range b.hosts {
			if o == hn {
				continue
			}
			hn.cfg.Peers = append(hn.cfg.Peers, router.Peer{ID: o.cfg.ID, Name: fmt.Sprintf("h%d", o.n),
				Underlay: o.underlay, WGPublicKey: pubs[o.n-1], WGPort: 51820,
				Bridge: o.cfg.BridgeAddr.Addr(), Ranges: o.cfg.Local})
		}
	}
	for _, hn := range b.hosts {
		if err := hn.r.Set(hn.cfg); err != nil {
			t.Fatalf("host %d Set: %v", hn.n, err)
		}
	}
	return b
}

type keyPair struct{ priv, pub string }

func wgGenerateKey() (keyPair, error) {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return keyPair{}, err
	}
	return keyPair{priv: k.String(), pub: k.PublicKey().String()}, nil
}

// addPod attaches a pod with address a (in the host's local range) to host hn.
func (b *bed) addPod(hn *host, a netip.Addr) pod {
	b.t.Helper()
	p := pod{ns: b.newNS(fmt.Sprintf("%s-h%dp%d", b.prefix, hn.n, len(hn.pods)+1)), addr: a}
	b.veth(hn.ns, fmt.Sprintf("vp%d", len(hn.pods)+1), p.ns, "eth0", hn.cfg.Bridge, hn.r.MTU())
	b.addrUp(p.ns, "eth0", netip.PrefixFrom(a, hn.cfg.Range.Bits()), hn.cfg.BridgeAddr.Addr())
	hn.pods = append(hn.pods, p)
	return p
}

// ping reports whether one ping from namespace ns to dst succeeds.
func ping(ns string, dst netip.Addr) error {
	out, err := exec.Command("nsenter", "--net="+nsPath(ns), "ping", "-c", "1", "-W", "1", dst.String()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ping %v from %s: %v: %s", dst, ns, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// eventually polls fn until it returns nil or d passes.
func eventually(t *testing.T, d time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pingAll checks that every pod reaches every other pod.
func (b *bed) pingAll(t *testing.T) int {
	t.Helper()
	var all []pod
	for _, hn := range b.hosts {
		all = append(all, hn.pods...)
	}
	pairs := 0
	for _, src := range all {
		for _, dst := range all {
			if src == dst {
				continue
			}
			eventually(t, 10*time.Second, func() error { return ping(src.ns, dst.addr) })
			pairs++
		}
	}
	return pairs
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
