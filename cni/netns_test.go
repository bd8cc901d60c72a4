package cni

// Kernel tests (root only): a throwaway "host" namespace with a real bridge,
// throwaway pod namespaces (testutil.NetNS; a namespace is its path here,
// as for the runtime), the fake peer on a unix socket, and the plugin's
// command methods run inside the host namespace as the runtime would run
// the binary there.

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/vishvananda/netlink"

	"github.com/weftmesh/weft/internal/testutil"
)

const testGateway = "10.32.0.1"

type testbed struct {
	prefix string       // of the namespace names
	pods   atomic.Int32 // pod namespaces made
	host   string       // the host namespace's path
	bridge string
	peer   *fakePeer
	data   string
}

// newPod creates a pod namespace that lives until tb's test ends and
// returns its path.
func (b *testbed) newPod(tb testing.TB) string {
	tb.Helper()
	return testutil.NetNS(tb, fmt.Sprintf("%s-p%d", b.prefix, b.pods.Add(1)))
}

func newTestbed(tb testing.TB) *testbed {
	tb.Helper()
	testutil.Root(tb)
	b := &testbed{prefix: testutil.Prefix("wc"), bridge: "weft", data: tb.TempDir()}
	b.host = testutil.NetNS(tb, b.prefix+"-host")
	err := testutil.InNetNS(b.host, func() error {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: b.bridge}}
		if err := netlink.LinkAdd(br); err != nil {
			return err
		}
		a, _ := netlink.ParseAddr(testGateway + "/12")
		if err := netlink.AddrAdd(br, a); err != nil {
			return err
		}
		// kube-proxy's strict ARP: the host answers ARP only for addresses
		// of the asking interface. Pods must reach their gateway anyway.
		if err := os.WriteFile("/proc/sys/net/ipv4/conf/all/arp_ignore", []byte("1"), 0o644); err != nil {
			return err
		}
		return netlink.LinkSetUp(br)
	})
	if err != nil {
		tb.Fatalf("bridge in host netns: %v", err)
	}
	b.peer = newFakePeer(tb, b.bridge)
	return b
}

func (b *testbed) conf(v string, extra string) []byte {
	return fmt.Appendf(nil, `{"cniVersion":%q,"name":"weft","type":"weft-cni","socket":%q,"dataDir":%q%s}`, v, b.peer.socket, b.data, extra)
}

// run executes one command method of a fresh plugin inside the host netns.
func (b *testbed) run(cmd string, args *skel.CmdArgs) (string, error) {
	var out bytes.Buffer
	p := New(&out, nil)
	f := map[string]func(*skel.CmdArgs) error{"ADD": p.Add, "DEL": p.Del, "CHECK": p.Check, "STATUS": p.Status, "GC": p.GC}[cmd]
	var cerr error
	if err := testutil.InNetNS(b.host, func() error { cerr = f(args); return nil }); err != nil {
		return "", err
	}
	return out.String(), cerr
}

// inHost / inNS run fn inside a namespace and fail the test on error.
func inNS(tb testing.TB, path string, fn func() error) {
	tb.Helper()
	if err := testutil.InNetNS(path, fn); err != nil {
		tb.Fatal(err)
	}
}

func randomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func weftVeths(tb testing.TB, n string) []string {
	tb.Helper()
	var names []string
	inNS(tb, n, func() error {
		links, err := netlink.LinkList()
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, "wf") {
				names = append(names, l.Attrs().Name)
			}
		}
		return err
	})
	return names
}

func TestAddCheckDelDel(t *testing.T) {
	b := newTestbed(t)
	for _, v := range []string{"0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			pod := b.newPod(t)
			id := randomID()
			args := &skel.CmdArgs{ContainerID: id, Netns: pod, IfName: "eth0",
				Args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_UID=u1", StdinData: b.conf(v, "")}
			out, err := b.run("ADD", args)
			if err != nil {
				t.Fatalf("ADD = %v", err)
			}
			allocs, dns, _ := b.peer.state()
			addr := allocs[id]
			if addr == "" {
				t.Fatalf("peer has no allocation for %s: %v", id, allocs)
			}
			checkResultJSON(t, v, out, pod, hostVethName(id, "eth0"), addr)
			if d := dns["web.default"]; d.Address != strings.Split(addr, "/")[0] || d.ContainerID != id {
				t.Errorf("DNS record = %+v; want web.default → %s for %s", d, addr, id)
			}
			checkKernel(t, b, pod, id, addr)

			// CHECK with ADD's result as prevResult passes ...
			var raw map[string]any
			_ = json.Unmarshal([]byte(out), &raw)
			prev, _ := json.Marshal(raw)
			check := *args
			check.StdinData = b.conf(v, `,"prevResult":`+string(prev))
			if _, err := b.run("CHECK", &check); err != nil {
				t.Fatalf("CHECK = %v", err)
			}
			// ... fails while the host's route to the pod is gone ...
			var podRoute netlink.Route
			inNS(t, b.host, func() error {
				rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: PodRouteProtocol}, netlink.RT_FILTER_PROTOCOL)
				if err != nil || len(rs) != 1 {
					return fmt.Errorf("pod routes %v, %v; want 1", rs, err)
				}
				podRoute = rs[0]
				return netlink.RouteDel(&podRoute)
			})
			if _, err := b.run("CHECK", &check); err == nil || !strings.Contains(err.Error(), "no route") {
				t.Fatalf("CHECK without the host's route = %v; want 'no route'", err)
			}
			inNS(t, b.host, func() error { return netlink.RouteAdd(&podRoute) })
			if _, err := b.run("CHECK", &check); err != nil {
				t.Fatalf("CHECK after the route is back = %v", err)
			}
			// ... and once the pod's address is gone.
			inNS(t, pod, func() error {
				l, err := netlink.LinkByName("eth0")
				if err != nil {
					return err
				}
				a, _ := netlink.ParseAddr(addr)
				return netlink.AddrDel(l, a)
			})
			if _, err := b.run("CHECK", &check); err == nil || !strings.Contains(err.Error(), "lacks address") {
				t.Fatalf("CHECK after address removal = %v; want 'lacks address'", err)
			}

			del := *args
			if _, err := b.run("DEL", &del); err != nil {
				t.Fatalf("DEL = %v", err)
			}
			if got := weftVeths(t, b.host); len(got) != 0 {
				t.Errorf("veths after DEL = %v; want none", got)
			}
			allocs, dns, released := b.peer.state()
			if _, ok := allocs[id]; ok || len(dns) != 0 || !contains(released, id) {
				t.Errorf("after DEL peer has allocs %v, dns %v, released %v; want %s released", allocs, dns, released, id)
			}
			del.Netns = "" // containerd's second DEL, netns gone
			if _, err := b.run("DEL", &del); err != nil {
				t.Fatalf("second DEL = %v", err)
			}
		})
	}
}

func checkResultJSON(t *testing.T, v, out, netns, hostVeth, addr string) {
	t.Helper()
	var head struct {
		Version string `json:"cniVersion"`
		IPs     []map[string]any
	}
	if err := json.Unmarshal([]byte(out), &head); err != nil || head.Version != v {
		t.Fatalf("result %s: cniVersion %q, err %v; want %s", out, head.Version, err, v)
	}
	if _, hasVer := head.IPs[0]["version"]; hasVer != (v == "0.4.0") {
		t.Errorf("result %s: ips[0].version present = %v; want only for 0.4.0", out, hasVer)
	}
	r, err := version.NewResult(v, []byte(out))
	if err != nil {
		t.Fatalf("parse %s result: %v", v, err)
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Interfaces) != 2 || res.Interfaces[0].Name != hostVeth || res.Interfaces[0].Sandbox != "" ||
		res.Interfaces[1].Name != "eth0" || res.Interfaces[1].Sandbox != netns || res.Interfaces[1].Mac == "" {
		t.Errorf("interfaces = %s; want [%s, eth0 in %s]", out, hostVeth, netns)
	}
	if len(res.IPs) != 1 || res.IPs[0].Address.String() != addr || res.IPs[0].Gateway.String() != testGateway ||
		res.IPs[0].Interface == nil || *res.IPs[0].Interface != 1 {
		t.Errorf("ips = %s; want %s via %s on interface 1", out, addr, testGateway)
	}
	if len(res.Routes) != 1 || res.Routes[0].Dst.String() != "0.0.0.0/0" || res.Routes[0].GW.String() != testGateway {
		t.Errorf("routes = %s; want default via %s", out, testGateway)
	}
	if len(res.DNS.Nameservers) != 1 || res.DNS.Domain != "weft.local" {
		t.Errorf("dns = %+v; want the peer's", res.DNS)
	}
}

// checkKernel verifies the routed veth pair (no bridge port, proxy ARP, the
// host's route and neighbour to the pod), MTU, the pod's address, gateway
// neighbour and route, and that the pod reaches its gateway over TCP.
func checkKernel(t *testing.T, b *testbed, pod, id, addr string) {
	t.Helper()
	var ln net.Listener
	inNS(t, b.host, func() error {
		l, err := netlink.LinkByName(hostVethName(id, "eth0"))
		if err != nil {
			return err
		}
		if l.Type() != "veth" || l.Attrs().MasterIndex != 0 || l.Attrs().MTU != 1410 {
			return fmt.Errorf("host veth %s: type %s master %d mtu %d; want a routed veth, mtu 1410", l.Attrs().Name, l.Type(), l.Attrs().MasterIndex, l.Attrs().MTU)
		}
		if b, err := os.ReadFile("/proc/sys/net/ipv4/conf/" + l.Attrs().Name + "/proxy_arp"); err != nil || string(b) != "1\n" {
			return fmt.Errorf("proxy_arp on %s = %q, %v", l.Attrs().Name, b, err)
		}
		pfx := netip.MustParsePrefix(addr)
		routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: l.Attrs().Index}, netlink.RT_FILTER_OIF)
		if err != nil {
			return err
		}
		if len(routes) != 1 || routes[0].Dst.String() != pfx.Addr().String()+"/32" || routes[0].Protocol != PodRouteProtocol {
			return fmt.Errorf("host routes via %s: %v; want %s/32 proto %d", l.Attrs().Name, routes, pfx.Addr(), PodRouteProtocol)
		}
		neighs, err := netlink.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		if len(neighs) != 1 || neighs[0].State != netlink.NUD_PERMANENT || !neighs[0].IP.Equal(net.IP(pfx.Addr().AsSlice())) {
			return fmt.Errorf("host neighbours on %s: %v; want %s permanent", l.Attrs().Name, neighs, pfx.Addr())
		}
		ln, err = net.Listen("tcp", testGateway+":0")
		return err
	})
	defer ln.Close()
	accepted := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Close()
		}
		accepted <- err
	}()
	inNS(t, pod, func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4)
		if len(addrs) != 1 || addrs[0].IPNet.String() != addr || l.Attrs().MTU != 1410 {
			return fmt.Errorf("pod eth0: addrs %v mtu %d; want %s mtu 1410", addrs, l.Attrs().MTU, addr)
		}
		neighs, _ := netlink.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
		if len(neighs) != 1 || !neighs[0].IP.Equal(net.ParseIP(testGateway)) || neighs[0].State != netlink.NUD_PERMANENT {
			return fmt.Errorf("pod neighbours %v; want %s permanent", neighs, testGateway)
		}
		routes, _ := netlink.RouteList(l, netlink.FAMILY_V4)
		if !hasRoute(routes, &types.Route{Dst: *defaultDst(netip.MustParseAddr(testGateway)), GW: net.ParseIP(testGateway)}) {
			return fmt.Errorf("pod routes %v; want default via %s", routes, testGateway)
		}
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
		if err != nil {
			return fmt.Errorf("pod → gateway: %w", err)
		}
		return c.Close()
	})
	select {
	case err := <-accepted:
		if err != nil {
			t.Fatalf("accept: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("gateway never accepted the pod's connection")
	}
}

func TestAddFailureRollsBack(t *testing.T) {
	b := newTestbed(t)
	tests := []struct {
		name        string
		extra       string                         // extra config JSON
		setup       func(t testing.TB, pod string) // before ADD
		netns       func(pod string) string
		failDNS     bool
		wantCode    uint
		wantRelease bool // an address was allocated, so it must be released
	}{
		{name: "bridge missing", extra: `,"bridge":"nobridge0"`, wantCode: types.ErrTryAgainLater, wantRelease: true},
		{name: "netns bogus", netns: func(string) string { return "/tmp/not-a-netns-weft" }, wantCode: types.ErrInvalidNetNS},
		{name: "peer not running", extra: `,"socket":"/nonexistent-weft/weft.sock"`, wantCode: types.ErrTryAgainLater},
		{name: "dns fails", failDNS: true, wantCode: types.ErrInternal, wantRelease: true},
		{name: "eth0 taken in pod", wantCode: types.ErrInternal, wantRelease: true, setup: func(t testing.TB, pod string) {
			inNS(t, pod, func() error { return netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}}) })
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := b.newPod(t)
			if tt.setup != nil {
				tt.setup(t, pod)
			}
			path := pod
			if tt.netns != nil {
				path = tt.netns(pod)
			}
			b.peer.mu.Lock()
			b.peer.failDNS = tt.failDNS
			b.peer.mu.Unlock()
			id := randomID()
			_, err := b.run("ADD", &skel.CmdArgs{ContainerID: id, Netns: path, IfName: "eth0",
				Args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=" + id[:8], StdinData: b.conf("1.0.0", tt.extra)})
			var te *types.Error
			if !errors.As(err, &te) || te.Code != tt.wantCode {
				t.Fatalf("ADD = %v; want CNI error %d", err, tt.wantCode)
			}
			if got := weftVeths(t, b.host); len(got) != 0 {
				t.Errorf("veths after failed ADD = %v; want none", got)
			}
			allocs, dns, released := b.peer.state()
			if _, ok := allocs[id]; ok || len(dns) != 0 || contains(released, id) != tt.wantRelease {
				t.Errorf("after failed ADD: allocs %v dns %v released %v; want %s gone (released: %v)", allocs, dns, released, id, tt.wantRelease)
			}
			if tt.setup == nil && tt.netns == nil {
				inNS(t, pod, func() error {
					if _, err := netlink.LinkByName("eth0"); err == nil {
						return errors.New("eth0 left in pod after failed ADD")
					}
					return nil
				})
			}
		})
	}
}

// Pods started in a burst get distinct addresses and their own veths;
// deleting them frees every address.
func TestConcurrentPods(t *testing.T) {
	b := newTestbed(t)
	const n = 30
	pods := make([]string, n)
	for i := range pods {
		pods[i] = b.newPod(t)
	}
	ids := make([]string, n)
	errs := make(chan error, n)
	for i := range n {
		ids[i] = randomID()
		go func() {
			_, err := b.run("ADD", &skel.CmdArgs{ContainerID: ids[i], Netns: pods[i], IfName: "eth0", StdinData: b.conf("1.0.0", "")})
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("ADD = %v", err)
		}
	}
	allocs, _, _ := b.peer.state()
	seen := map[string]bool{}
	for _, a := range allocs {
		seen[a] = true
	}
	if len(allocs) != n || len(seen) != n || len(weftVeths(t, b.host)) != n {
		t.Fatalf("after %d ADDs: %d allocations, %d distinct, %d veths", n, len(allocs), len(seen), len(weftVeths(t, b.host)))
	}
	for i := range n {
		go func() {
			_, err := b.run("DEL", &skel.CmdArgs{ContainerID: ids[i], Netns: pods[i], IfName: "eth0", StdinData: b.conf("1.0.0", "")})
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("DEL = %v", err)
		}
	}
	if allocs, _, _ := b.peer.state(); len(allocs) != 0 || len(weftVeths(t, b.host)) != 0 {
		t.Fatalf("after DELs: allocations %v, veths %v", allocs, weftVeths(t, b.host))
	}
}

func BenchmarkAddDel(bm *testing.B) {
	b := newTestbed(bm)
	pod := b.newPod(bm)
	conf := b.conf("1.0.0", "")
	for bm.Loop() {
		args := &skel.CmdArgs{ContainerID: randomID(), Netns: pod, IfName: "eth0",
			Args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=bench", StdinData: conf}
		if _, err := b.run("ADD", args); err != nil {
			bm.Fatalf("ADD = %v", err)
		}
		if _, err := b.run("DEL", args); err != nil {
			bm.Fatalf("DEL = %v", err)
		}
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
