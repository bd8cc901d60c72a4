package daemon

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/weftmesh/weft/api"
	"github.com/weftmesh/weft/api/client"
	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/ipam"
	"github.com/weftmesh/weft/kube"
	"github.com/weftmesh/weft/kube/kubefake"
	"github.com/weftmesh/weft/policy"
	"github.com/weftmesh/weft/policy/nft"
	"github.com/weftmesh/weft/policy/nft/nfttest"
)

var (
	t0   = time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	addr = netip.MustParseAddr
)

func alloc(id, pfx, name string) ipam.Allocation {
	return ipam.Allocation{ID: id, Addr: netip.MustParsePrefix(pfx), Name: name}
}

// podLines prints a snapshot's pods as "ns/name ip node labels".
func podLines(s policy.Snapshot) []string {
	var out []string
	for _, p := range s.Pods {
		ip := "-"
		if p.IP.IsValid() {
			ip = p.IP.String()
		}
		out = append(out, fmt.Sprintf("%s/%s %s %s %v", p.Namespace, p.Name, ip, p.Node, p.Labels))
	}
	return out
}

func TestSplitPodName(t *testing.T) {
	for _, tt := range []struct{ in, ns, name string }{
		{"a.x", "x", "a"}, {"web-0.prod.default", "default", "web-0.prod"}, {"nodot", "", ""}, {".x", "", ""}, {"a.", "", ""},
	} {
		ns, name, ok := splitPodName(tt.in)
		if ns != tt.ns || name != tt.name || ok != (tt.ns != "") {
			t.Errorf("splitPodName(%q) = %q, %q, %v; want %q, %q", tt.in, ns, name, ok, tt.ns, tt.name)
		}
	}
}

func TestBuildSnapshot(t *testing.T) {
	lbl := func(v string) map[string]string { return map[string]string{"pod": v} }
	kp := func(ns, name, ip, node string) kube.Pod {
		p := kube.Pod{Namespace: ns, Name: name, Labels: lbl(name), Node: node, Created: t0}
		if ip != "" {
			p.IP = addr(ip)
		}
		return p
	}
	finished := kp("x", "done", "10.32.0.9", "n1")
	finished.Finished = true
	host := kp("kube-system", "proxy", "192.168.79.11", "n1")
	host.HostNetwork = true
	oldRemote := kp("y", "old", "10.36.0.7", "n2")
	oldRemote.Deleting = true
	newRemote := kp("y", "new", "10.36.0.7", "n2")
	newRemote.Created = t0.Add(time.Minute)
	view := kube.PolicyView{
		Namespaces: []policy.Namespace{{Name: "x", Labels: map[string]string{"ns": "x"}}},
		Pods: []kube.Pod{
			kp("x", "a", "10.32.0.2", "n1"), // the API and the allocation agree
			kp("x", "b", "", "n1"),          // attached, the kubelet has not written its IP yet
			kp("x", "c", "10.32.0.4", "n1"), // a deleted pod's stale address, now x/d's
			kp("x", "d", "", "n1"),
			kp("x", "e", "10.32.0.5", "n1"), // a restarted sandbox: old and new address
			kp("x", "f", "", "n1"),          // scheduled here, not attached yet
			finished, host,
			kp("y", "r", "10.36.0.2", "n2"),
			oldRemote, newRemote,
			kp("y", "pending", "", ""),
		},
	}
	in := snapshotInput{View: view, Self: "n1",
		Nodes:     []kube.Node{{Name: "n1", InternalIP: addr("192.168.79.11")}, {Name: "n2", InternalIP: addr("192.168.79.12")}},
		NodeAddrs: map[string][]netip.Addr{"n1": {addr("10.32.0.1"), addr("192.168.79.11")}, "n2": {addr("10.36.0.1")}},
		Allocs: []ipam.Allocation{
			alloc(ipam.BridgeID, "10.32.0.1/12", ""),
			alloc("c-a", "10.32.0.2/12", "a.x"),
			alloc("c-b", "10.32.0.3/12", "b.x"),
			alloc("c-d", "10.32.0.4/12", "d.x"),
			alloc("c-e1", "10.32.0.5/12", "e.x"),
			alloc("c-e2", "10.32.0.6/12", "e.x"),
			alloc("c-z", "10.32.0.8/12", "z.x"), // not in the informer
			alloc("manual", "10.32.0.10/12", ""),
		},
	}
	snap, info := buildSnapshot(in)
	want := []string{
		"x/a 10.32.0.2 n1 map[pod:a]",
		"x/b 10.32.0.3 n1 map[pod:b]",
		"x/c - n1 map[pod:c]",
		"x/d 10.32.0.4 n1 map[pod:d]",
		"x/e 10.32.0.5 n1 map[pod:e]",
		"x/e 10.32.0.6 n1 map[pod:e]",
		"x/f - n1 map[pod:f]",
		"y/new 10.36.0.7 n2 map[pod:new]",
		"y/old - n2 map[pod:old]",
		"y/pending -  map[pod:pending]",
		"y/r 10.36.0.2 n2 map[pod:r]",
	}
	if diff := cmp.Diff(want, podLines(snap)); diff != "" {
		t.Errorf("pods (-want +got):\n%s", diff)
	}
	// Pods with an address, any network: a b c d e done proxy r old new.
	if info.Pods != 10 {
		t.Errorf("info.Pods = %d; want 10", info.Pods)
	}
	if len(info.Unknown) != 1 || info.Unknown[0].key() != "x/z" {
		t.Errorf("info.Unknown = %v; want x/z", info.Unknown)
	}
	wantNodes := []policy.Node{{Name: "n1", Addrs: []netip.Addr{addr("192.168.79.11"), addr("10.32.0.1")}},
		{Name: "n2", Addrs: []netip.Addr{addr("192.168.79.12"), addr("10.36.0.1")}}}
	if diff := cmp.Diff(wantNodes, snap.Nodes, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("nodes (-want +got):\n%s", diff)
	}
	if len(snap.Namespaces) != 1 {
		t.Errorf("namespaces %v; want the view's", snap.Namespaces)
	}
}

// convert converts an API policy or fails the test.
func convert(t *testing.T, np *networkingv1.NetworkPolicy) *policy.NetworkPolicy {
	t.Helper()
	out, err := policy.Convert(np, policy.Capabilities{})
	if out == nil {
		t.Fatalf("Convert %s: %v", np.Name, err)
	}
	return out
}

// apiPolicy is a NetworkPolicy of namespace x selecting pod=sel for
// ingress; from, when not "", allows pods pod=from on TCP port.
func apiPolicy(name, sel, from string, port int32) *networkingv1.NetworkPolicy {
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: name, UID: types.UID("np-" + name), ResourceVersion: "1"},
		Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}}
	if sel != "" {
		np.Spec.PodSelector = metav1.LabelSelector{MatchLabels: map[string]string{"pod": sel}}
	}
	if from != "" {
		p := intstr.FromInt32(port)
		np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
			From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"pod": from}}}},
			Ports: []networkingv1.NetworkPolicyPort{{Port: &p}},
		}}
	}
	return np
}

// explainModel: x/a (n1) isolated by x/deny-a and x/allow-b (from pod=b on
// TCP 80); x/b and x/c on n1, y/r on n2.
func explainModel(t *testing.T) *policy.Model {
	t.Helper()
	pod := func(ns, name, ip, node string) policy.Pod {
		return policy.Pod{Namespace: ns, Name: name, Labels: map[string]string{"pod": name}, IP: addr(ip), Node: node}
	}
	return policy.NewModel(policy.Snapshot{
		Pods: []policy.Pod{pod("x", "a", "10.32.0.2", "n1"), pod("x", "b", "10.32.0.3", "n1"), pod("x", "c", "10.32.0.4", "n1"),
			pod("y", "r", "10.36.0.2", "n2")},
		Policies: []*policy.NetworkPolicy{convert(t, apiPolicy("deny-a", "a", "", 0)), convert(t, apiPolicy("allow-b", "a", "b", 80))},
		Nodes:    []policy.Node{{Name: "n1", Addrs: []netip.Addr{addr("192.168.79.11")}}},
	})
}

func TestExplain(t *testing.T) {
	m := explainModel(t)
	ex, err := explain(m, client.ExplainRequest{Src: "x/b", Dst: "10.32.0.2", Port: 80, Protocol: "tcp"})
	if err != nil {
		t.Fatalf("explain: %v", err)
	}
	want := &client.Explanation{Src: "x/b", SrcIP: "10.32.0.3", Dst: "x/a", DstIP: "10.32.0.2", Port: 80, Protocol: "TCP", Allowed: true,
		Verdict: "allowed (egress allowed: no policy selects the pod; ingress allowed: by x/allow-b rule 0)",
		Egress: client.PolicyDecision{Allowed: true, Reason: "not-isolated", Text: "egress allowed: no policy selects the pod",
			Selected: []string{}, Rules: []client.PolicyRule{}},
		Ingress: client.PolicyDecision{Allowed: true, Reason: "allowed-by", Text: "ingress allowed: by x/allow-b rule 0",
			Selected: []string{"x/allow-b", "x/deny-a"}, Rules: []client.PolicyRule{{Policy: "x/allow-b", Direction: "ingress", Index: 0,
				Text: "from pods pod=b in namespace x; on TCP/80"}}},
	}
	if diff := cmp.Diff(want, ex); diff != "" {
		t.Errorf("explain x/b → x/a 80/TCP (-want +got):\n%s", diff)
	}
	ex, err = explain(m, client.ExplainRequest{Src: "x/c", Dst: "x/a", Port: 80, Protocol: "TCP"})
	if err != nil || ex.Allowed || ex.Ingress.Reason != "default-deny" ||
		ex.Ingress.Text != "ingress denied: default deny: selected by x/allow-b, x/deny-a, no rule allows" {
		t.Errorf("explain x/c → x/a = %+v, %v; want denied by the default deny of x/allow-b, x/deny-a", ex, err)
	}
	ex, err = explain(m, client.ExplainRequest{Src: "192.168.79.11", Dst: "x/a", Port: 8080, Protocol: "TCP"})
	if err != nil || !ex.Allowed || ex.Src != "node n1 (192.168.79.11)" || ex.Ingress.Reason != "from-own-node" {
		t.Errorf("explain node → x/a = %+v, %v; want allowed from the own node", ex, err)
	}
	for _, bad := range []struct {
		req  client.ExplainRequest
		want error
	}{
		{client.ExplainRequest{Src: "x/nobody", Dst: "x/a", Protocol: "TCP"}, api.ErrNotFound},
		{client.ExplainRequest{Src: "x", Dst: "x/a", Protocol: "TCP"}, api.ErrBadRequest},
		{client.ExplainRequest{Src: "x/b", Dst: "x/a", Protocol: "GRE"}, api.ErrBadRequest},
		{client.ExplainRequest{Src: "x/b", Dst: "x/a", Port: 70000, Protocol: "TCP"}, api.ErrBadRequest},
	} {
		if _, err := explain(m, bad.req); !errors.Is(err, bad.want) {
			t.Errorf("explain(%+v) = %v; want %v", bad.req, err, bad.want)
		}
	}
}

// ipv4Packet builds an IPv4 header of protocol proto with a transport header
// carrying dport.
func ipv4Packet(src, dst string, proto policy.Protocol, dport uint16) []byte {
	b := make([]byte, 28)
	b[0] = 0x45
	b[9] = byte(proto)
	s, d := addr(src).As4(), addr(dst).As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	binary.BigEndian.PutUint16(b[22:], dport)
	return b
}

func TestParseDrop(t *testing.T) {
	k, ok := parseDrop("weft-policy deny ingress x/a", ipv4Packet("10.32.0.4", "10.32.0.2", policy.TCP, 80))
	want := dropKey{Direction: "ingress", Pod: "x/a", Src: addr("10.32.0.4"), Dst: addr("10.32.0.2"), Port: 80, Proto: policy.TCP}
	if !ok || k != want {
		t.Errorf("parseDrop = %+v, %v; want %+v", k, ok, want)
	}
	icmp := ipv4Packet("10.32.0.2", "10.36.0.2", policy.ICMP, 0x0800)
	if k, ok := parseDrop("weft-policy deny egress x/a", icmp); !ok || k.Port != 0 || k.Proto != policy.ICMP {
		t.Errorf("parseDrop(ICMP) = %+v, %v; want port 0", k, ok)
	}
	frag := ipv4Packet("10.32.0.4", "10.32.0.2", policy.UDP, 53)
	frag[7] = 1 // a later fragment: no ports
	if k, ok := parseDrop("weft-policy deny ingress x/a", frag); !ok || k.Port != 0 {
		t.Errorf("parseDrop(fragment) = %+v, %v; want port 0", k, ok)
	}
	for _, bad := range []struct {
		prefix string
		pkt    []byte
	}{
		{"other deny ingress x/a", ipv4Packet("10.32.0.4", "10.32.0.2", policy.TCP, 80)},
		{"weft-policy deny sideways x/a", ipv4Packet("10.32.0.4", "10.32.0.2", policy.TCP, 80)},
		{"weft-policy deny ingress a", ipv4Packet("10.32.0.4", "10.32.0.2", policy.TCP, 80)},
		{"weft-policy deny ingress x/a", []byte{0x60, 0, 0}},
		{"weft-policy deny ingress x/a", []byte{0x4f, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8}},
	} {
		if k, ok := parseDrop(bad.prefix, bad.pkt); ok {
			t.Errorf("parseDrop(%q, % x) = %+v; want not a drop", bad.prefix, bad.pkt, k)
		}
	}
}

func FuzzParseDrop(f *testing.F) {
	f.Add("weft-policy deny ingress x/a", ipv4Packet("10.32.0.4", "10.32.0.2", policy.TCP, 80))
	f.Add("weft-policy deny egress x/a", []byte{0x46, 0, 0, 0})
	f.Fuzz(func(t *testing.T, prefix string, pkt []byte) {
		if k, ok := parseDrop(prefix, pkt); ok && (!k.Src.Is4() || !k.Dst.Is4()) {
			t.Errorf("parseDrop = %+v; want IPv4 addresses", k)
		}
	})
}

func TestDropLog(t *testing.T) {
	m := explainModel(t)
	l := newDropLog(2)
	deny := "weft-policy deny ingress x/a"
	if l.Record(m, "something else", ipv4Packet("10.32.0.4", "10.32.0.2", policy.TCP, 80), t0) {
		t.Errorf("Record of another prefix = true")
	}
	l.Record(m, deny, ipv4Packet("10.32.0.4", "10.32.0.2", policy.TCP, 80), t0)
	l.Record(m, deny, ipv4Packet("10.36.0.2", "10.32.0.2", policy.UDP, 81), t0.Add(time.Second))
	l.Record(m, deny, ipv4Packet("10.32.0.4", "10.32.0.2", policy.TCP, 80), t0.Add(2*time.Second)) // the first again: newest
	got := l.List()
	want := []client.PolicyDrop{
		{Time: "2026-12-04T10:00:02Z", Count: 2, Direction: "ingress", Pod: "x/a", Src: "10.32.0.4", SrcName: "x/c",
			Dst: "10.32.0.2", DstName: "x/a", Port: 80, Protocol: "TCP", Policies: []string{"x/allow-b", "x/deny-a"},
			Reason: "default deny: selected by x/allow-b, x/deny-a, no rule allows"},
		{Time: "2026-12-04T10:00:01Z", Count: 1, Direction: "ingress", Pod: "x/a", Src: "10.36.0.2", SrcName: "y/r",
			Dst: "10.32.0.2", DstName: "x/a", Port: 81, Protocol: "UDP", Policies: []string{"x/allow-b", "x/deny-a"},
			Reason: "default deny: selected by x/allow-b, x/deny-a, no rule allows"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}
	// A third kind evicts the oldest; the counters keep counting.
	l.Record(nil, "weft-policy deny egress x/b", ipv4Packet("10.32.0.3", "10.36.0.2", policy.TCP, 443), t0.Add(3*time.Second))
	got = l.List()
	if len(got) != 2 || got[0].Pod != "x/b" || got[0].Reason != "default deny" || got[0].SrcName != "10.32.0.3" || got[1].Port != 80 {
		t.Errorf("after a third kind: %+v; want x/b's egress drop (no model) and x/a's port 80", got)
	}
	wantCounts := []client.PolicyDropCount{
		{Direction: "ingress", Namespace: "x", Pod: "a", Count: 3},
		{Direction: "egress", Namespace: "x", Pod: "b", Count: 1},
	}
	if diff := cmp.Diff(wantCounts, l.Counts()); diff != "" {
		t.Errorf("Counts (-want +got):\n%s", diff)
	}
	if l.Total() != 4 {
		t.Errorf("Total = %d; want 4", l.Total())
	}
	// A drop that the model allows now says so.
	l.Record(m, deny, ipv4Packet("10.32.0.3", "10.32.0.2", policy.TCP, 80), t0)
	if d := l.List()[0]; len(d.Policies) != 0 || !strings.Contains(d.Reason, "now ingress allowed: by x/allow-b rule 0") {
		t.Errorf("drop of a now allowed flow: %+v", d)
	}
}

func TestDenies(t *testing.T) {
	m := explainModel(t)
	host := map[netip.Addr]bool{addr("192.168.79.11"): true}
	for _, tt := range []struct {
		f    flow
		want bool
	}{
		{flow{addr("10.32.0.3"), addr("10.32.0.2"), 80, policy.TCP}, false}, // allowed by x/allow-b
		{flow{addr("10.32.0.4"), addr("10.32.0.2"), 80, policy.TCP}, true},  // x/c is not b
		{flow{addr("10.32.0.3"), addr("10.32.0.2"), 81, policy.TCP}, true},  // wrong port
		{flow{addr("10.36.0.2"), addr("10.32.0.2"), 80, policy.TCP}, true},  // remote pod to a local isolated pod
		{flow{addr("192.168.79.11"), addr("10.32.0.2"), 22, policy.TCP}, false},
		{flow{addr("10.36.0.2"), addr("10.36.0.9"), 80, policy.TCP}, false}, // no pod of n1
		{flow{addr("10.32.0.2"), addr("1.1.1.1"), 443, policy.TCP}, false},  // x/a's egress is open
	} {
		if got := denies(m, "n1", host, tt.f); got != tt.want {
			t.Errorf("denies(%+v) = %v; want %v", tt.f, got, tt.want)
		}
	}
}

// fakeCutter records the flows Cut judges and denies.
type fakeCutter struct {
	flows []flow
	cut   []flow
}

func (c *fakeCutter) Cut(deny func(flow) bool) (uint, error) {
	c.cut = nil
	for _, f := range c.flows {
		if deny(f) {
			c.cut = append(c.cut, f)
		}
	}
	return uint(len(c.cut)), nil
}

// policyFixture is a policyState over a fake API server, a fake kernel
// and allocations the test sets.
type policyFixture struct {
	ps     *policyState
	cs     *fake.Clientset
	kernel *nfttest.Conn
	cutter *fakeCutter
	allocs []ipam.Allocation // read by the state; set before a pass
}

func newPolicyFixture(t *testing.T, objs ...runtime.Object) *policyFixture {
	t.Helper()
	cs := fake.NewClientset(objs...)
	kc := kube.DefaultConfig()
	kc.API, kc.Policy = kubefake.New(cs), true
	c, err := kube.New(kc)
	if err != nil {
		t.Fatal(err)
	}
	f := &policyFixture{cs: cs, kernel: nfttest.NewConn(), cutter: &fakeCutter{}}
	f.ps = newPolicyState(c, "n1", nft.NewApplier(f.kernel), f.cutter, slog.New(slog.DiscardHandler))
	f.ps.allocs = func() []ipam.Allocation { return slices.Clone(f.allocs) }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	testutil.Eventually(t, 10*time.Second, "policy informers synced", func() error {
		if _, ok := c.PolicyVersion(); !ok {
			return errors.New("not synced")
		}
		return nil
	})
	return f
}

func apiPod(ns, name, ip string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(ns + "-" + name), Labels: map[string]string{"pod": name}}}
	p.Spec.NodeName = "n1"
	p.Status.Phase = corev1.PodRunning
	if ip != "" {
		p.Status.PodIP, p.Status.PodIPs = ip, []corev1.PodIP{{IP: ip}}
	}
	return p
}

func apiNamespace(name string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"ns": name}}}
}

// TestPolicyPass: status counts, what reaches the kernel, a second pass
// that changes nothing, conntrack cuts after a change, and an apply
// error in the status.
func TestPolicyPass(t *testing.T) {
	f := newPolicyFixture(t, apiNamespace("x"), apiPod("x", "a", "10.32.0.2"), apiPod("x", "b", "10.32.0.3"),
		apiPod("x", "c", ""), apiPolicy("deny-a", "a", "", 0))
	f.allocs = []ipam.Allocation{alloc("c-a", "10.32.0.2/12", "a.x"), alloc("c-b", "10.32.0.3/12", "b.x"), alloc("c-c", "10.32.0.4/12", "c.x")}
	f.cutter.flows = []flow{{addr("10.32.0.3"), addr("10.32.0.2"), 80, policy.TCP}, {addr("10.32.0.2"), addr("10.32.0.3"), 80, policy.TCP}}
	if err := f.ps.pass(); err != nil {
		t.Fatalf("pass: %v", err)
	}
	st, problems := (&Daemon{policy: f.ps}).policyStatus()
	if want := (client.PolicyStatus{Enabled: true, Synced: true, Policies: 1, Pods: 3, Isolated: 1}); st != want || len(problems) != 0 {
		t.Errorf("status %+v, problems %q; want %+v and none", st, problems, want)
	}
	lines := strings.Join(f.kernel.Take(), "\n")
	for _, w := range []string{"add table", "add chain ingress-10.32.0.2", "add element ingress { 10.32.0.2 : jump ingress-10.32.0.2 }"} {
		if !strings.Contains(lines, w) {
			t.Errorf("kernel transcript lacks %q:\n%s", w, lines)
		}
	}
	if want := []flow{{addr("10.32.0.3"), addr("10.32.0.2"), 80, policy.TCP}}; !cmp.Equal(f.cutter.cut, want, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })) {
		t.Errorf("cut %v; want %v (x/b → x/a, denied now)", f.cutter.cut, want)
	}
	f.cutter.cut = nil
	if err := f.ps.pass(); err != nil {
		t.Fatalf("second pass: %v", err)
	}
	if l := f.kernel.Take(); len(l) != 0 || f.cutter.cut != nil {
		t.Errorf("a second pass changed %q and cut %v; want nothing", l, f.cutter.cut)
	}

	// The kernel refuses: the status says so, and is not synced.
	f.kernel.Fail(errors.New("netlink: operation not permitted"))
	f.ps.applier.Forget(f.ps.compile.Table)
	if _, err := f.cs.NetworkingV1().NetworkPolicies("x").Create(context.Background(), apiPolicy("deny-b", "b", "", 0), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "x/deny-b seen", func() error {
		if v, _ := f.ps.client.PolicyView(); len(v.Policies) != 2 {
			return errors.New("not yet")
		}
		return nil
	})
	if err := f.ps.pass(); err == nil {
		t.Fatalf("pass with a failing kernel = nil")
	}
	st, problems = (&Daemon{policy: f.ps}).policyStatus()
	if st.Synced || len(problems) != 1 || !strings.Contains(problems[0], "operation not permitted") {
		t.Errorf("after a failed apply: status %+v, problems %q; want not synced and the error", st, problems)
	}
	f.kernel.Fail(nil)
	if err := f.ps.pass(); err != nil {
		t.Fatalf("pass after the kernel recovered: %v", err)
	}
	if st, _ := (&Daemon{policy: f.ps}).policyStatus(); !st.Synced || st.Isolated != 2 || st.Policies != 2 {
		t.Errorf("after recovery: %+v; want synced, 2 policies, 2 isolated", st)
	}
}

// TestPolicyWait: CNI ADD of a pod waits for its program; it fails with
// the reason when the Pod object never shows up.
func TestPolicyWait(t *testing.T) {
	f := newPolicyFixture(t, apiNamespace("x"), apiPolicy("deny-all", "", "", 0))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.ps.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	// The Pod object exists before its sandbox.
	if _, err := f.cs.CoreV1().Pods("x").Create(ctx, apiPod("x", "new", ""), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "x/new seen", func() error {
		if v, _ := f.ps.client.PolicyView(); !viewHas(v, "x", "new") {
			return errors.New("not yet")
		}
		return nil
	})
	f.kernel.Take()
	f.allocs = []ipam.Allocation{alloc("c-new", "10.32.0.7/12", "new.x")} // allocated, then Allocate waits
	start := time.Now()
	if err := f.ps.wait(ctx, "new.x", 10*time.Second); err != nil {
		t.Fatalf("wait for x/new: %v", err)
	}
	t.Logf("x/new programmed %v after its allocation", time.Since(start))
	if lines := strings.Join(f.kernel.Take(), "\n"); !strings.Contains(lines, "add element ingress { 10.32.0.7 : jump ingress-10.32.0.7 }") {
		t.Errorf("x/new's program was not in the kernel when wait returned:\n%s", lines)
	}

	// A pod the informer never lists: ADD fails with the reason.
	f.allocs = append(f.allocs, alloc("c-ghost", "10.32.0.8/12", "ghost.x"))
	err := f.ps.wait(ctx, "ghost.x", 300*time.Millisecond)
	if !errors.Is(err, api.ErrUnavailable) || !strings.Contains(err.Error(), "Pod object is not in this peer's informer") {
		t.Errorf("wait for a pod the API does not list = %v; want ErrUnavailable naming the informer", err)
	}
	// Without a pod name (a container outside Kubernetes), no wait.
	if err := f.ps.wait(ctx, "", time.Millisecond); err != nil {
		t.Errorf("wait without a pod name = %v", err)
	}
}

// TestPolicyUnsupported: a policy the API accepts but weft cannot express
// (SCTP without the kernel's) is reported in status and logged once,
// still isolates its pod, and leaves the other policies whole; a problem
// that goes away and comes back is logged again.
func TestPolicyUnsupported(t *testing.T) {
	sctp := apiPolicy("sctp-a", "a", "", 0)
	proto, p80 := corev1.ProtocolSCTP, intstr.FromInt32(80)
	sctp.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Protocol: &proto, Port: &p80}}}}
	f := newPolicyFixture(t, apiNamespace("x"), apiPod("x", "a", "10.32.0.2"), apiPod("x", "b", "10.32.0.3"),
		apiPod("x", "c", "10.32.0.4"), sctp, apiPolicy("allow-b", "b", "c", 80))
	f.allocs = []ipam.Allocation{alloc("c-a", "10.32.0.2/12", "a.x"), alloc("c-b", "10.32.0.3/12", "b.x"), alloc("c-c", "10.32.0.4/12", "c.x")}
	var logs strings.Builder
	f.ps.log = slog.New(slog.NewTextHandler(&logs, nil))
	if err := f.ps.pass(); err != nil {
		t.Fatalf("pass: %v", err)
	}
	reported := func(s string) bool { return strings.Contains(s, "x/sctp-a") && strings.Contains(s, "SCTP") }
	st, problems := (&Daemon{policy: f.ps}).policyStatus()
	if want := (client.PolicyStatus{Enabled: true, Synced: true, Policies: 2, Pods: 3, Isolated: 2}); st != want ||
		len(problems) != 1 || !reported(problems[0]) {
		t.Errorf("status %+v, problems %q; want %+v and one problem naming x/sctp-a and SCTP", st, problems, want)
	}
	if n := strings.Count(logs.String(), "x/sctp-a"); n != 1 || !reported(logs.String()) {
		t.Errorf("log names x/sctp-a %d times; want once, with SCTP:\n%s", n, logs.String())
	}
	lines := strings.Join(f.kernel.Take(), "\n")
	for _, w := range []string{"add rule ingress-10.32.0.2 counter drop", `meta l4proto tcp th dport 80 ip saddr @pods-`,
		"add element ingress { 10.32.0.2 : jump ingress-10.32.0.2, 10.32.0.3 : jump ingress-10.32.0.3 }"} {
		if !strings.Contains(lines, w) {
			t.Errorf("kernel transcript lacks %q:\n%s", w, lines)
		}
	}
	if strings.Contains(lines, "sctp") {
		t.Errorf("kernel transcript has an SCTP match this kernel lacks:\n%s", lines)
	}
	host := map[netip.Addr]bool{}
	for _, tt := range []struct {
		f    flow
		want bool
	}{
		{flow{addr("10.32.0.4"), addr("10.32.0.2"), 80, policy.TCP}, true},  // x/a: isolated, its only rule cannot match
		{flow{addr("10.32.0.4"), addr("10.32.0.2"), 80, policy.SCTP}, true}, // ... not even SCTP
		{flow{addr("10.32.0.4"), addr("10.32.0.3"), 80, policy.TCP}, false}, // x/allow-b is whole
		{flow{addr("10.32.0.2"), addr("10.32.0.3"), 80, policy.TCP}, true},
	} {
		if got := denies(f.ps.model, "n1", host, tt.f); got != tt.want {
			t.Errorf("denies(%+v) = %v; want %v", tt.f, got, tt.want)
		}
	}
	if err := f.ps.pass(); err != nil {
		t.Fatalf("second pass: %v", err)
	}
	if n := strings.Count(logs.String(), "x/sctp-a"); n != 1 {
		t.Errorf("after a second pass the log names x/sctp-a %d times; want once", n)
	}

	// Deleted: no problem; created again: logged again.
	ctx := context.Background()
	policies := f.cs.NetworkingV1().NetworkPolicies("x")
	seen := func(n int) {
		t.Helper()
		testutil.Eventually(t, 10*time.Second, fmt.Sprintf("%d policies seen", n), func() error {
			if v, _ := f.ps.client.PolicyView(); len(v.Policies) != n {
				return errors.New("not yet")
			}
			return nil
		})
	}
	if err := policies.Delete(ctx, "sctp-a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	seen(1)
	if err := f.ps.pass(); err != nil {
		t.Fatalf("pass: %v", err)
	}
	if _, problems := (&Daemon{policy: f.ps}).policyStatus(); len(problems) != 0 {
		t.Errorf("problems after x/sctp-a was deleted: %q; want none", problems)
	}
	if _, err := policies.Create(ctx, sctp, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	seen(2)
	if err := f.ps.pass(); err != nil {
		t.Fatalf("pass: %v", err)
	}
	if n := strings.Count(logs.String(), "x/sctp-a"); n != 2 {
		t.Errorf("after x/sctp-a came back the log names it %d times; want twice", n)
	}
}
