package router_test

import (
	"net/netip"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/weftmesh/weft/peer"
	"github.com/weftmesh/weft/router"
	"github.com/weftmesh/weft/router/routertest"
)

func TestMain(m *testing.M) {
	// The kernel tests start this test binary as the userspace WireGuard
	// datapath process (what `weft datapath` is in production).
	if len(os.Args) > 1 && os.Args[1] == datapathArg {
		os.Exit(datapathMain(os.Args[2:]))
	}
	goleak.VerifyTestMain(m)
}

var (
	underlayA = netip.MustParseAddr("192.168.1.10")
	pfx       = netip.MustParsePrefix
	addr      = netip.MustParseAddr
)

// peers: B on our subnet, C behind a router.
func testPeers() []router.Peer {
	return []router.Peer{
		{ID: 0xb, Name: "b", Underlay: addr("192.168.1.11"), WGPublicKey: "pubB", WGPort: 51820,
			Bridge: addr("10.36.0.1"), Ranges: []netip.Prefix{pfx("10.36.0.0/14")}},
		{ID: 0xc, Name: "c", Underlay: addr("172.16.0.12"), WGPublicKey: "pubC",
			Bridge: addr("10.40.0.1"), Ranges: []netip.Prefix{pfx("10.40.0.0/14"), pfx("10.44.0.0/15")}},
	}
}

func testConfig(transport string, insecure bool) router.Config {
	cfg := router.DefaultConfig()
	cfg.ID = 0xa
	cfg.Range = pfx("10.32.0.0/12")
	cfg.BridgeAddr = pfx("10.32.0.1/12")
	cfg.Local = []netip.Prefix{pfx("10.32.0.0/14")}
	cfg.Transport = transport
	cfg.Insecure = insecure
	cfg.Underlay = underlayA
	cfg.WGPrivateKey = "privA"
	cfg.Peers = testPeers()
	return cfg
}

type fixture struct {
	k  *routertest.Kernel
	wg *routertest.WG
	r  *router.Router
}

// tb is what newFixture needs of a *testing.T or *rapid.T.
type tb interface {
	Helper()
	Fatalf(format string, args ...any)
}

func newFixture(t tb, opts router.Options) *fixture {
	t.Helper()
	k := routertest.NewKernel()
	k.SetUnderlay(underlayA, routertest.Underlay("eth0", 1500, "192.168.1.10/24"))
	w := routertest.NewWG(k)
	opts.Kernel, opts.WireGuard = k, w.Factory()
	r, err := router.New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return &fixture{k: k, wg: w, r: r}
}

// take returns the kernel and WireGuard transcripts since the last take.
func (f *fixture) take() []string { return append(f.k.Take(), f.wg.Take()...) }

func (f *fixture) set(t *testing.T, cfg router.Config) []string {
	t.Helper()
	if err := f.r.Set(cfg); err != nil {
		t.Fatalf("Set: %v", err)
	}
	return f.take()
}

var commonHead = []string{
	"sysctl net/ipv4/ip_forward=1",
}

func TestTranscripts(t *testing.T) {
	vtepB, vtepC := router.VTEPMAC(0xb).String(), router.VTEPMAC(0xc).String()
	vtepA := router.VTEPMAC(0xa).String()
	tests := []struct {
		name       string
		cfg        router.Config
		want       []string
		transports map[peer.ID]string
		mtu        int
	}{
		{
			name: "wireguard",
			cfg:  testConfig(router.TransportWireGuard, false),
			want: []string{
				"sysctl net/ipv4/ip_forward=1",
				"link ensure weft type bridge mtu 1440 up",
				"link ensure weft-wg type wireguard mtu 1440 up",
				"sysctl net/ipv4/conf/weft/proxy_arp=1",
				"sysctl net/ipv4/neigh/weft/proxy_delay=0",
				"sysctl net/ipv4/conf/weft/rp_filter=2",
				"sysctl net/ipv4/conf/weft-wg/rp_filter=2",
				"addr add 10.32.0.1/12 dev weft noprefixroute",
				"addr add 10.32.0.1/32 dev weft-wg noprefixroute",
				"route replace unreachable 10.32.0.0/12",
				"route replace 10.32.0.0/14 dev weft src 10.32.0.1",
				"route replace 10.36.0.0/14 dev weft-wg src 10.32.0.1",
				"route replace 10.36.0.1/32 dev weft-wg src 10.32.0.1",
				"route replace 10.40.0.0/14 dev weft-wg src 10.32.0.1",
				"route replace 10.40.0.1/32 dev weft-wg src 10.32.0.1",
				"route replace 10.44.0.0/15 dev weft-wg src 10.32.0.1",
				"nft table ip weft: masquerade saddr 10.32.0.0/12 daddr != 10.32.0.0/12",
				"wg create weft-wg mtu 1440",
				"wg configure weft-wg port 51820 peers [pubB@192.168.1.11:51820 allowed 10.36.0.0/14,10.36.0.1/32; " +
					"pubC@172.16.0.12:51820 allowed 10.40.0.0/14,10.40.0.1/32,10.44.0.0/15]",
			},
			transports: map[peer.ID]string{0xb: "wireguard", 0xc: "wireguard"},
			mtu:        1440,
		},
		{
			name: "vxlan",
			cfg:  testConfig(router.TransportVXLAN, true),
			want: []string{
				"sysctl net/ipv4/ip_forward=1",
				"link ensure weft type bridge mtu 1450 up",
				"link ensure weft-vx type vxlan id 1 dstport 4789 local 192.168.1.10 nolearning address " + vtepA + " mtu 1450 up",
				"sysctl net/ipv4/conf/weft/proxy_arp=1",
				"sysctl net/ipv4/neigh/weft/proxy_delay=0",
				"sysctl net/ipv4/conf/weft/rp_filter=2",
				"sysctl net/ipv4/conf/weft-vx/rp_filter=2",
				"addr add 10.32.0.1/12 dev weft noprefixroute",
				"addr add 10.32.0.1/32 dev weft-vx noprefixroute",
				"fdb replace " + vtepB + " dst 192.168.1.11 dev weft-vx",
				"fdb replace " + vtepC + " dst 172.16.0.12 dev weft-vx",
				"neigh replace 10.36.0.1 lladdr " + vtepB + " dev weft-vx",
				"neigh replace 10.40.0.1 lladdr " + vtepC + " dev weft-vx",
				"route replace unreachable 10.32.0.0/12",
				"route replace 10.32.0.0/14 dev weft src 10.32.0.1",
				"route replace 10.36.0.0/14 via 10.36.0.1 dev weft-vx onlink src 10.32.0.1",
				"route replace 10.36.0.1/32 via 10.36.0.1 dev weft-vx onlink src 10.32.0.1",
				"route replace 10.40.0.0/14 via 10.40.0.1 dev weft-vx onlink src 10.32.0.1",
				"route replace 10.40.0.1/32 via 10.40.0.1 dev weft-vx onlink src 10.32.0.1",
				"route replace 10.44.0.0/15 via 10.40.0.1 dev weft-vx onlink src 10.32.0.1",
				"nft table ip weft: masquerade saddr 10.32.0.0/12 daddr != 10.32.0.0/12",
			},
			transports: map[peer.ID]string{0xb: "vxlan", 0xc: "vxlan"},
			mtu:        1450,
		},
		{
			name: "direct",
			cfg:  testConfig(router.TransportDirect, true),
			want: []string{
				"sysctl net/ipv4/ip_forward=1",
				"link ensure weft type bridge mtu 1500 up",
				"sysctl net/ipv4/conf/weft/proxy_arp=1",
				"sysctl net/ipv4/neigh/weft/proxy_delay=0",
				"sysctl net/ipv4/conf/weft/rp_filter=2",
				"addr add 10.32.0.1/12 dev weft noprefixroute",
				"route replace unreachable 10.32.0.0/12",
				"route replace 10.32.0.0/14 dev weft src 10.32.0.1",
				"route replace 10.36.0.0/14 via 192.168.1.11 dev eth0 src 10.32.0.1",
				"route replace 10.36.0.1/32 via 192.168.1.11 dev eth0 src 10.32.0.1",
				"nft table ip weft: masquerade saddr 10.32.0.0/12 daddr != 10.32.0.0/12",
			},
			transports: map[peer.ID]string{0xb: "direct", 0xc: "none"},
			mtu:        1500,
		},
		{
			name: "auto insecure: direct on-link, vxlan beyond",
			cfg:  testConfig(router.TransportAuto, true),
			want: []string{
				"sysctl net/ipv4/ip_forward=1",
				"link ensure weft type bridge mtu 1450 up",
				"link ensure weft-vx type vxlan id 1 dstport 4789 local 192.168.1.10 nolearning address " + vtepA + " mtu 1450 up",
				"sysctl net/ipv4/conf/weft/proxy_arp=1",
				"sysctl net/ipv4/neigh/weft/proxy_delay=0",
				"sysctl net/ipv4/conf/weft/rp_filter=2",
				"sysctl net/ipv4/conf/weft-vx/rp_filter=2",
				"addr add 10.32.0.1/12 dev weft noprefixroute",
				"addr add 10.32.0.1/32 dev weft-vx noprefixroute",
				"fdb replace " + vtepC + " dst 172.16.0.12 dev weft-vx",
				"neigh replace 10.40.0.1 lladdr " + vtepC + " dev weft-vx",
				"route replace unreachable 10.32.0.0/12",
				"route replace 10.32.0.0/14 dev weft src 10.32.0.1",
				"route replace 10.36.0.0/14 via 192.168.1.11 dev eth0 src 10.32.0.1",
				"route replace 10.36.0.1/32 via 192.168.1.11 dev eth0 src 10.32.0.1",
				"route replace 10.40.0.0/14 via 10.40.0.1 dev weft-vx onlink src 10.32.0.1",
				"route replace 10.40.0.1/32 via 10.40.0.1 dev weft-vx onlink src 10.32.0.1",
				"route replace 10.44.0.0/15 via 10.40.0.1 dev weft-vx onlink src 10.32.0.1",
				"nft table ip weft: masquerade saddr 10.32.0.0/12 daddr != 10.32.0.0/12",
			},
			transports: map[peer.ID]string{0xb: "direct", 0xc: "vxlan"},
			mtu:        1450,
		},
		{
			name: "vxlan with the underlay unknown (wildcard listener): source by route, MTU from 1500",
			cfg: func() router.Config {
				c := testConfig(router.TransportVXLAN, true)
				c.Underlay, c.Peers, c.Masquerade = addr("0.0.0.0"), c.Peers[1:], false
				return c
			}(),
			want: []string{
				"sysctl net/ipv4/ip_forward=1",
				"link ensure weft type bridge mtu 1450 up",
				"link ensure weft-vx type vxlan id 1 dstport 4789 nolearning address " + vtepA + " mtu 1450 up",
				"sysctl net/ipv4/conf/weft/proxy_arp=1",
				"sysctl net/ipv4/neigh/weft/proxy_delay=0",
				"sysctl net/ipv4/conf/weft/rp_filter=2",
				"sysctl net/ipv4/conf/weft-vx/rp_filter=2",
				"addr add 10.32.0.1/12 dev weft noprefixroute",
				"addr add 10.32.0.1/32 dev weft-vx noprefixroute",
				"fdb replace " + vtepC + " dst 172.16.0.12 dev weft-vx",
				"neigh replace 10.40.0.1 lladdr " + vtepC + " dev weft-vx",
				"route replace unreachable 10.32.0.0/12",
				"route replace 10.32.0.0/14 dev weft src 10.32.0.1",
				"route replace 10.40.0.0/14 via 10.40.0.1 dev weft-vx onlink src 10.32.0.1",
				"route replace 10.40.0.1/32 via 10.40.0.1 dev weft-vx onlink src 10.32.0.1",
				"route replace 10.44.0.0/15 via 10.40.0.1 dev weft-vx onlink src 10.32.0.1",
			},
			transports: map[peer.ID]string{0xc: "vxlan"},
			mtu:        1450,
		},
		{
			name: "bridge address not yet allocated: devices only, no routes",
			cfg: func() router.Config {
				c := testConfig(router.TransportDirect, true)
				c.BridgeAddr, c.Local, c.Masquerade, c.MTU = netip.Prefix{}, nil, false, 1400
				return c
			}(),
			want: []string{
				"sysctl net/ipv4/ip_forward=1",
				"link ensure weft type bridge mtu 1400 up",
				"sysctl net/ipv4/conf/weft/proxy_arp=1",
				"sysctl net/ipv4/neigh/weft/proxy_delay=0",
				"sysctl net/ipv4/conf/weft/rp_filter=2",
			},
			transports: map[peer.ID]string{0xb: "direct", 0xc: "none"},
			mtu:        1400,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, router.Options{})
			if diff := cmp.Diff(tt.want, f.set(t, tt.cfg)); diff != "" {
				t.Errorf("first Set transcript (-want +got):\n%s", diff)
			}
			if got := f.set(t, tt.cfg); len(got) != 0 {
				t.Errorf("second Set with the same config changed the kernel:\n%q", got)
			}
			for id, want := range tt.transports {
				if got := f.r.PeerTransport(id); got != want {
					t.Errorf("PeerTransport(%v) = %q; want %q", id, got, want)
				}
			}
			if got := f.r.MTU(); got != tt.mtu {
				t.Errorf("MTU() = %d; want %d", got, tt.mtu)
			}
		})
	}
}
