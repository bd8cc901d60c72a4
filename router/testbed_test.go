package router_test

// The bed of the kernel tests (root only): test/testbed's switch and host
// namespaces (the underlay exists only inside them), a real Router per
// host, and "pods" (namespaces with a veth into the host's weft bridge,
// addr/12 and a default route via the bridge address).

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/peer"
	"github.com/weftmesh/weft/router"
	"github.com/weftmesh/weft/router/routertest"
	"github.com/weftmesh/weft/router/wg"
	"github.com/weftmesh/weft/test/testbed"
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

// bed is test/testbed's bed (a switch and hosts, no weft processes) with a
// Router on each host.
type bed struct {
	*testbed.Bed
	t     *testing.T
	hosts []*host
}

type host struct {
	*testbed.Host
	kernel *router.NetlinkKernel
	rec    *routertest.Recorder // records the router's mutations of kernel
	r      *router.Router
	cfg    router.Config
	pods   []pod
}

type pod struct {
	ns   string
	addr netip.Addr
}

// handle runs fn with a netlink handle in namespace name.
func (b *bed) handle(name string, fn func(*netlink.Handle) error) {
	b.t.Helper()
	ns, err := netns.GetFromPath(testutil.NetNSPath(name))
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
	peerNS, err := netns.GetFromPath(testutil.NetNSPath(bns))
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
// via gw.
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
		return h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: gw.AsSlice()})
	})
}

// newUnderlay builds the switch and n hosts with underlay addresses on
// their eth0 (testbed.New), and nothing else. The last offLink hosts sit on
// a second subnet that the switch namespace routes (testbed.AddRoutedHost).
func newUnderlay(t *testing.T, n, offLink int) *bed {
	t.Helper()
	b := &bed{Bed: testbed.New(t, n-offLink), t: t}
	for range offLink {
		b.AddRoutedHost()
	}
	for _, h := range b.Hosts {
		b.hosts = append(b.hosts, &host{Host: h})
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
		k, err := router.NewNetlinkKernel(router.NetlinkOptions{NetNSPath: hn.NSPath()})
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
		cfg.Underlay = hn.Addr
		cfg.WGIface = b.Prefix + fmt.Sprintf("-wg%d", i+1) // /var/run/wireguard is shared by all namespaces
		cfg.WGPrivateKey = key.priv
		cfg.VNI = 42
		hn.cfg = cfg
		t.Cleanup(func() {
			if err := r.Reset(); err != nil {
				t.Errorf("cleanup Reset host %d: %v", hn.Index, err)
			}
			k.Close()
		})
	}
	for _, hn := range b.hosts {
		for _, o := range b.hosts {
			if o == hn {
				continue
			}
			hn.cfg.Peers = append(hn.cfg.Peers, router.Peer{ID: o.cfg.ID, Name: o.Name,
				Underlay: o.Addr, WGPublicKey: pubs[o.Index-1], WGPort: 51820,
				Bridge: o.cfg.BridgeAddr.Addr(), Ranges: o.cfg.Local})
		}
	}
	for _, hn := range b.hosts {
		if err := hn.r.Set(hn.cfg); err != nil {
			t.Fatalf("host %d Set: %v", hn.Index, err)
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
	p := pod{ns: b.AddNamespace(fmt.Sprintf("h%dp%d", hn.Index, len(hn.pods)+1)), addr: a}
	b.veth(hn.NS, fmt.Sprintf("vp%d", len(hn.pods)+1), p.ns, "eth0", hn.cfg.Bridge, hn.r.MTU())
	b.addrUp(p.ns, "eth0", netip.PrefixFrom(a, hn.cfg.Range.Bits()), hn.cfg.BridgeAddr.Addr())
	hn.pods = append(hn.pods, p)
	return p
}

// ping reports whether one ping from namespace ns to dst succeeds.
func ping(ns string, dst netip.Addr) error {
	out, err := exec.Command("nsenter", "--net="+testutil.NetNSPath(ns), "ping", "-c", "1", "-W", "1", dst.String()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ping %v from %s: %v: %s", dst, ns, err, strings.TrimSpace(string(out)))
	}
	return nil
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
			testutil.Eventually(t, 10*time.Second, "pods to ping each other", func() error { return ping(src.ns, dst.addr) })
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
