package nft_test

// The datapath test (root): a "node" namespace routes between five "pod"
// namespaces the way weft attaches pods (a veth per pod, a /32 route,
// proxy ARP, the gateway address local on the node) and an "external"
// host; the compiled program is applied in the node namespace; every
// endpoint probes every other with TCP connects and UDP echoes on ports
// 80 and 81, and each answer must be the evaluator's.

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/policy"
	"github.com/weftmesh/weft/policy/nft"
)

// bedConfig compiles for the bed, whose pods' host veths are wp0..wp4:
// every scenario runs with the anti-spoofing rule.
func bedConfig() policy.Config {
	c := policy.DefaultConfig()
	c.PodIfPrefix = "wp"
	return c
}

var (
	gateway  = netip.MustParseAddr("10.32.0.1")   // the node's address on the pod network
	nodeExt  = netip.MustParseAddr("192.168.9.1") // the node's address towards the external host
	external = netip.MustParseAddr("192.168.9.2")
)

// dpBed is the datapath bed.
type dpBed struct {
	t       *testing.T
	node    string            // path of the node namespace
	nsOf    map[string]string // endpoint name → namespace path
	pods    []policy.Pod
	servers []io
}

type io interface{ Close() error }

func handleAt(t *testing.T, path string) *netlink.Handle {
	t.Helper()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatalf("open netns %s: %v", path, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", path, err)
	}
	t.Cleanup(h.Close)
	return h
}

func prefix(a netip.Addr, bits int) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, 32)}}
}

func newDPBed(t *testing.T) *dpBed {
	testutil.Root(t)
	pfx := testutil.Prefix("wpd")
	b := &dpBed{t: t, node: testutil.NetNS(t, pfx+"-node"), nsOf: map[string]string{}}
	b.nsOf["node"] = b.node
	nh := handleAt(t, b.node)
	lo, err := nh.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := nh.AddrAdd(lo, prefix(gateway, 32)); err != nil {
		t.Fatalf("gateway address: %v", err)
	}
	b.sysctl(b.node, "net/ipv4/ip_forward", "1")

	ports := []policy.NamedPort{}
	for _, pr := range []policy.Protocol{policy.TCP, policy.UDP} {
		for _, port := range []uint16{80, 81} {
			ports = append(ports, policy.NamedPort{Name: fmt.Sprintf("serve-%d-%s", port, strings.ToLower(pr.String())), Port: port, Protocol: pr})
		}
	}
	for i, id := range []string{"x/a", "x/b", "x/c", "y/a", "y/b"} {
		ns, name, _ := strings.Cut(id, "/")
		ip := netip.AddrFrom4([4]byte{10, 32, 0, byte(10 + i)})
		path := testutil.NetNS(t, fmt.Sprintf("%s-p%d", pfx, i))
		b.nsOf[id] = path
		host := fmt.Sprintf("wp%d", i)
		b.veth(host, path, ip, 24, gateway)
		h, err := nh.LinkByName(host)
		if err != nil {
			t.Fatal(err)
		}
		if err := nh.RouteAdd(&netlink.Route{LinkIndex: h.Attrs().Index, Dst: prefix(ip, 32).IPNet, Scope: netlink.SCOPE_LINK}); err != nil {
			t.Fatalf("route %v: %v", ip, err)
		}
		b.sysctl(b.node, "net/ipv4/conf/"+host+"/proxy_arp", "1")
		b.pods = append(b.pods, policy.Pod{Namespace: ns, Name: name, Labels: map[string]string{"pod": name},
			IP: ip, Node: "n1", Ports: ports})
	}
	ext := testutil.NetNS(t, pfx+"-ext")
	b.nsOf["ext"] = ext
	b.veth("wpext", ext, external, 24, nodeExt)
	l, err := nh.LinkByName("wpext")
	if err != nil {
		t.Fatal(err)
	}
	if err := nh.AddrAdd(l, prefix(nodeExt, 24)); err != nil {
		t.Fatalf("node external address: %v", err)
	}
	for _, path := range b.nsOf {
		b.serve(path)
	}
	return b
}

// veth connects the node to namespace path: hostName on the node, eth0
// with addr/bits and a default route via gw in path.
func (b *dpBed) veth(hostName, path string, addr netip.Addr, bits int, gw netip.Addr) {
	t := b.t
	t.Helper()
	peer, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	nh := handleAt(t, b.node)
	attrs := netlink.NewLinkAttrs()
	attrs.Name = hostName
	if err := nh.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "eth0", PeerNamespace: netlink.NsFd(peer)}); err != nil {
		t.Fatalf("veth %s: %v", hostName, err)
	}
	l, err := nh.LinkByName(hostName)
	if err != nil {
		t.Fatal(err)
	}
	if err := nh.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	ph := handleAt(t, path)
	e, err := ph.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := ph.AddrAdd(e, prefix(addr, bits)); err != nil {
		t.Fatal(err)
	}
	if err := ph.LinkSetUp(e); err != nil {
		t.Fatal(err)
	}
	if err := ph.RouteAdd(&netlink.Route{LinkIndex: e.Attrs().Index, Gw: gw.AsSlice()}); err != nil {
		t.Fatalf("default route in %s: %v", path, err)
	}
}

func (b *dpBed) sysctl(path, key, value string) {
	b.t.Helper()
	if err := testutil.InNetNS(path, func() error { return os.WriteFile("/proc/sys/"+key, []byte(value), 0o644) }); err != nil {
		b.t.Fatalf("sysctl %s=%s: %v", key, value, err)
	}
}

// serve opens TCP listeners and UDP echo sockets on ports 80 and 81 in
// namespace path (sockets stay in the namespace they were made in).
func (b *dpBed) serve(path string) {
	t := b.t
	err := testutil.InNetNS(path, func() error {
		for _, port := range []string{"80", "81"} {
			l, err := net.Listen("tcp4", ":"+port)
			if err != nil {
				return err
			}
			u, err := net.ListenPacket("udp4", ":"+port)
			if err != nil {
				return err
			}
			b.servers = append(b.servers, l, u)
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
			go func() {
				buf := make([]byte, 64)
				for {
					n, from, err := u.ReadFrom(buf)
					if err != nil {
						return
					}
					_, _ = u.WriteTo(buf[:n], from)
				}
			}()
		}
		return nil
	})
	if err != nil {
		t.Fatalf("servers in %s: %v", path, err)
	}
	t.Cleanup(func() {
		for _, s := range b.servers {
			s.Close()
		}
		b.servers = nil
	})
}

// probe reports whether a connection from the namespace at path to
// dst:port over proto gets through within timeout.
func probe(path string, dst netip.Addr, port uint16, proto policy.Protocol, timeout time.Duration) (bool, error) {
	ok := false
	err := testutil.InNetNS(path, func() error {
		addr := net.JoinHostPort(dst.String(), strconv.Itoa(int(port)))
		if proto == policy.TCP {
			c, err := net.DialTimeout("tcp4", addr, timeout)
			if err == nil {
				ok = true
				c.Close()
			}
			return nil
		}
		// Unconnected: a multi-homed server (the node) may answer from
		// another of its addresses.
		c, err := net.ListenPacket("udp4", ":0")
		if err != nil {
			return err
		}
		defer c.Close()
		to, err := net.ResolveUDPAddr("udp4", addr)
		if err != nil {
			return err
		}
		if _, err := c.WriteTo([]byte("ping"), to); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(timeout))
		buf := make([]byte, 16)
		if _, _, err := c.ReadFrom(buf); err == nil {
			ok = true
		}
		return nil
	})
	return ok, err
}

// endpoints are the probe's ends: name, address, namespace.
type endpoint struct {
	name string
	addr netip.Addr
}

func (b *dpBed) endpoints() []endpoint {
	var out []endpoint
	for _, p := range b.pods {
		out = append(out, endpoint{p.Namespace + "/" + p.Name, p.IP})
	}
	return append(out, endpoint{"node", gateway}, endpoint{"ext", external})
}

func (b *dpBed) model(t *testing.T, nps []*networkingv1.NetworkPolicy) *policy.Model {
	t.Helper()
	var conv []*policy.NetworkPolicy
	for _, o := range nps {
		np, _ := policy.Convert(o, policy.Capabilities{})
		if np == nil {
			t.Fatalf("Convert(%s) = nil", o.Name)
		}
		conv = append(conv, np)
	}
	return policy.NewModel(policy.Snapshot{
		Namespaces: []policy.Namespace{{Name: "x", Labels: map[string]string{"ns": "x"}}, {Name: "y", Labels: map[string]string{"ns": "y"}}},
		Pods:       b.pods, Policies: conv,
		Nodes: []policy.Node{{Name: "n1", Addrs: []netip.Addr{gateway, nodeExt}}},
	})
}

// check applies the policies and compares every probe with Evaluate.
func (b *dpBed) check(t *testing.T, a *nft.Applier, nps []*networkingv1.NetworkPolicy) {
	t.Helper()
	m := b.model(t, nps)
	prog, err := bedConfig().Compile(m, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Apply(prog); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	// Accepted flows outlive a policy change (ct state established): a
	// probe whose ephemeral port repeats one of an earlier scenario would
	// ride its conntrack entry. The daemon cuts such entries on a change;
	// here every scenario starts without any.
	if err := handleAt(t, b.node).ConntrackTableFlush(netlink.ConntrackTable); err != nil {
		t.Fatalf("conntrack flush: %v", err)
	}
	var (
		mu   sync.Mutex
		bad  []string
		wg   sync.WaitGroup
		sema = make(chan struct{}, 32)
	)
	eps := b.endpoints()
	for _, src := range eps {
		for _, dst := range eps {
			if src == dst {
				continue
			}
			for _, pr := range []policy.Protocol{policy.TCP, policy.UDP} {
				for _, port := range []uint16{80, 81} {
					want := policy.Evaluate(m, m.Endpoint(src.addr), m.Endpoint(dst.addr), port, pr)
					wg.Add(1)
					sema <- struct{}{}
					go func() {
						defer func() { <-sema; wg.Done() }()
						got, err := probe(b.nsOf[src.name], dst.addr, port, pr, 300*time.Millisecond)
						if err == nil && !got && want.Allowed() {
							got, err = probe(b.nsOf[src.name], dst.addr, port, pr, 2*time.Second) // slow, not denied?
						}
						if err != nil || got != want.Allowed() {
							mu.Lock()
							bad = append(bad, fmt.Sprintf("%s → %s %v/%d: through=%v (%v); Evaluate: %v", src.name, dst.name, pr, port, got, err, want))
							mu.Unlock()
						}
					}()
				}
			}
		}
	}
	wg.Wait()
	if len(bad) > 0 {
		t.Errorf("datapath differs from the evaluator:\n%s\nprogram:\n%v", strings.Join(bad, "\n"), prog)
	}
}

// applier returns an applier of programs to the bed's node namespace.
func (b *dpBed) applier(t *testing.T) *nft.Applier {
	t.Helper()
	conn, err := nft.NewNetlinkConn(b.node)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return nft.NewApplier(conn)
}

func np(ns, name string, sel map[string]string, types []networkingv1.PolicyType, in []networkingv1.NetworkPolicyIngressRule, out []networkingv1.NetworkPolicyEgressRule) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: sel}, PolicyTypes: types, Ingress: in, Egress: out}}
}

// TestDatapath: fixed scenarios, then generated ones
// (WEFT_POLICY_DATAPATH_ROUNDS, default 4; the seed is logged).
func TestDatapath(t *testing.T) {
	b := newDPBed(t)
	a := b.applier(t)

	both := []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
	eg := []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	p80, serve81 := intstr.FromInt32(80), intstr.FromString("serve-81-udp")
	end := int32(81)
	scenarios := []struct {
		name string
		nps  []*networkingv1.NetworkPolicy
	}{
		{"no policy", nil},
		{"default deny all in x", []*networkingv1.NetworkPolicy{np("x", "deny", nil, both, nil, nil)}},
		{"x/a: ingress from y on TCP 80, egress to the node and ext's block on UDP 81 by name", []*networkingv1.NetworkPolicy{
			np("x", "a", map[string]string{"pod": "a"}, both,
				[]networkingv1.NetworkPolicyIngressRule{{
					From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"ns": "y"}}}},
					Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &p80}}}},
				[]networkingv1.NetworkPolicyEgressRule{
					{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: gateway.String() + "/32"}}}},
					{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0", Except: []string{"10.32.0.0/16"}}}},
						Ports: []networkingv1.NetworkPolicyPort{{Protocol: &udp, Port: &serve81}}},
				}),
		}},
		{"y: egress to pods of x on 80-81 UDP only; x/b isolated", []*networkingv1.NetworkPolicy{
			np("y", "out", nil, eg, nil, []networkingv1.NetworkPolicyEgressRule{{
				To:    []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"ns": "x"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &udp, Port: &p80, EndPort: &end}}}}),
			np("x", "b", map[string]string{"pod": "b"}, nil, []networkingv1.NetworkPolicyIngressRule{}, nil),
		}},
	}
	for _, s := range scenarios {
		t.Run(s.name, func(t *testing.T) { b.check(t, a, s.nps) })
	}

	rounds := 4
	if v, err := strconv.Atoi(os.Getenv("WEFT_POLICY_DATAPATH_ROUNDS")); err == nil {
		rounds = v
	}
	seed := uint64(time.Now().UnixNano())
	if v, err := strconv.ParseUint(os.Getenv("WEFT_POLICY_DATAPATH_SEED"), 10, 64); err == nil {
		seed = v
	}
	t.Logf("generated rounds: %d, seed %d (WEFT_POLICY_DATAPATH_SEED)", rounds, seed)
	r := rand.New(rand.NewPCG(seed, 0))
	for i := range rounds {
		var nps []*networkingv1.NetworkPolicy
		for j := range 1 + r.IntN(3) {
			nps = append(nps, genPolicy(r, fmt.Sprintf("g%d", j)))
		}
		t.Run(fmt.Sprintf("generated %d", i), func(t *testing.T) { b.check(t, a, nps) })
	}
}

// genPolicy draws a policy over the bed's namespaces, pods and addresses.
func genPolicy(r *rand.Rand, name string) *networkingv1.NetworkPolicy {
	pick := func(xs ...string) string { return xs[r.IntN(len(xs))] }
	sel := func(key string, values ...string) *metav1.LabelSelector {
		switch r.IntN(3) {
		case 0:
			return &metav1.LabelSelector{}
		case 1:
			return &metav1.LabelSelector{MatchLabels: map[string]string{key: pick(values...)}}
		}
		return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: key, Operator: metav1.LabelSelectorOpNotIn, Values: []string{pick(values...)}}}}
	}
	peer := func() networkingv1.NetworkPolicyPeer {
		switch r.IntN(4) {
		case 0:
			return networkingv1.NetworkPolicyPeer{PodSelector: sel("pod", "a", "b", "c")}
		case 1:
			return networkingv1.NetworkPolicyPeer{NamespaceSelector: sel("ns", "x", "y")}
		case 2:
			return networkingv1.NetworkPolicyPeer{NamespaceSelector: sel("ns", "x", "y"), PodSelector: sel("pod", "a", "b", "c")}
		}
		b := &networkingv1.IPBlock{CIDR: pick("10.32.0.0/24", "10.32.0.8/29", "192.168.9.0/24", "0.0.0.0/0", "10.32.0.1/32")}
		if r.IntN(2) == 0 {
			b.Except = []string{pick("10.32.0.10/31", "10.32.0.12/32", "192.168.9.2/32")}
		}
		return networkingv1.NetworkPolicyPeer{IPBlock: b}
	}
	port := func() networkingv1.NetworkPolicyPort {
		pr := []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP}[r.IntN(2)]
		p := networkingv1.NetworkPolicyPort{Protocol: &pr}
		switch r.IntN(4) {
		case 1:
			v := intstr.FromInt32(int32(80 + r.IntN(2)))
			p.Port = &v
		case 2:
			v, end := intstr.FromInt32(80), int32(81)
			p.Port, p.EndPort = &v, &end
		case 3:
			v := intstr.FromString(pick("serve-80-tcp", "serve-81-udp", "serve-81-tcp"))
			p.Port = &v
		}
		return p
	}
	o := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: pick("x", "y"), Name: name}}
	o.Spec.PodSelector = *sel("pod", "a", "b", "c")
	for range r.IntN(3) {
		var rule networkingv1.NetworkPolicyIngressRule
		for range r.IntN(3) {
			rule.From = append(rule.From, peer())
		}
		for range r.IntN(3) {
			rule.Ports = append(rule.Ports, port())
		}
		o.Spec.Ingress = append(o.Spec.Ingress, rule)
	}
	for range r.IntN(3) {
		var rule networkingv1.NetworkPolicyEgressRule
		for range r.IntN(3) {
			rule.To = append(rule.To, peer())
		}
		for range r.IntN(3) {
			rule.Ports = append(rule.Ports, port())
		}
		o.Spec.Egress = append(o.Spec.Egress, rule)
	}
	o.Spec.PolicyTypes = [][]networkingv1.PolicyType{nil, {networkingv1.PolicyTypeIngress}, {networkingv1.PolicyTypeEgress},
		{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}}[r.IntN(4)]
	return o
}
