package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// fataler is what the helpers need of testing.T and rapid.T.
type fataler interface {
	Helper()
	Fatalf(format string, args ...any)
}

// world is a mutable cluster for tests: the upstream e2e model
// (namespaces x, y, z labeled ns; pods a, b, c labeled pod, each serving
// TCP and UDP on 80 and 81 as serve-80-tcp and so on), spread over three
// nodes, plus the NetworkPolicy objects of a test case.
type world struct {
	namespaces []Namespace
	pods       []Pod
	policies   []*networkingv1.NetworkPolicy
	nodes      []Node
	caps       Capabilities
}

func e2eWorld() *world {
	w := &world{}
	for i := 1; i <= 3; i++ {
		w.nodes = append(w.nodes, Node{Name: fmt.Sprintf("n%d", i), Addrs: []netip.Addr{
			netip.AddrFrom4([4]byte{192, 168, 0, byte(i)}), netip.AddrFrom4([4]byte{10, 32, byte(i), 1})}})
	}
	var ports []NamedPort
	for _, proto := range []Protocol{TCP, UDP} {
		for _, port := range []uint16{80, 81} {
			ports = append(ports, NamedPort{Name: fmt.Sprintf("serve-%d-%s", port, strings.ToLower(proto.String())), Port: port, Protocol: proto})
		}
	}
	for i, ns := range []string{"x", "y", "z"} {
		w.namespaces = append(w.namespaces, Namespace{Name: ns, Labels: map[string]string{"ns": ns}})
		for j, name := range []string{"a", "b", "c"} {
			node := (i + j) % 3
			w.pods = append(w.pods, Pod{Namespace: ns, Name: name, Labels: map[string]string{"pod": name},
				IP:   netip.AddrFrom4([4]byte{10, 32, byte(node + 1), byte(10 + 3*i + j)}),
				Node: w.nodes[node].Name, Ports: slices.Clone(ports)})
		}
	}
	return w
}

func (w *world) pod(t fataler, id string) *Pod {
	t.Helper()
	ns, name, _ := strings.Cut(id, "/")
	for i := range w.pods {
		if w.pods[i].Namespace == ns && w.pods[i].Name == name {
			return &w.pods[i]
		}
	}
	t.Fatalf("no pod %s", id)
	return nil
}

func (w *world) model(t fataler) *Model {
	t.Helper()
	var nps []*NetworkPolicy
	for _, o := range w.policies {
		np, err := Convert(o, w.caps)
		if np == nil {
			t.Fatalf("Convert(%s/%s): %v", o.Namespace, o.Name, err)
		}
		nps = append(nps, np)
	}
	return NewModel(Snapshot{Namespaces: w.namespaces, Pods: w.pods, Policies: nps, Nodes: w.nodes})
}

// create adds np, replacing a policy of the same namespace and name.
func (w *world) create(np *networkingv1.NetworkPolicy) {
	w.policies = slices.DeleteFunc(w.policies, func(o *networkingv1.NetworkPolicy) bool {
		return o.Namespace == np.Namespace && o.Name == np.Name
	})
	w.policies = append(w.policies, np)
}

// programs compiles m for every node of w.
func (w *world) programs(t fataler, m *Model) map[string]*Program {
	t.Helper()
	out := map[string]*Program{}
	for _, n := range w.nodes {
		p, err := Compile(m, n.Name)
		if err != nil {
			t.Fatalf("Compile(%s): %v", n.Name, err)
		}
		out[n.Name] = p
	}
	return out
}

// judgeCluster sends a packet from src to dst through the programs of
// the nodes it passes, as the kernel would: the source's node, then the
// destination's when it is another node. It returns whether the packet
// arrives and the judgements met.
func judgeCluster(progs map[string]*Program, src, dst Endpoint, port uint16, proto Protocol) (bool, []Judgement) {
	if !proto.hasPorts() {
		port = 0
	}
	pkt := Packet{Src: src.IP, Dst: dst.IP, Proto: proto, Port: port}
	var nodes []string
	for _, e := range []Endpoint{src, dst} {
		n := e.Node
		if e.Pod != nil {
			n = e.Pod.Node
		}
		if n != "" && !slices.Contains(nodes, n) {
			nodes = append(nodes, n)
		}
	}
	var js []Judgement
	for _, n := range nodes {
		p, ok := progs[n]
		if !ok {
			continue
		}
		j := p.Judge(pkt)
		js = append(js, j)
		if !j.Accept {
			return false, js
		}
	}
	return true, js
}

// reach is an expected truth table over pod pairs, "x/a" → "y/b".
type reach struct {
	pods []string
	m    map[[2]string]bool
}

func newReach(w *world, v bool) *reach {
	r := &reach{m: map[[2]string]bool{}}
	for _, p := range w.pods {
		r.pods = append(r.pods, p.Namespace+"/"+p.Name)
	}
	for _, f := range r.pods {
		for _, t := range r.pods {
			r.m[[2]string{f, t}] = v
		}
	}
	return r
}

// matchPat reports whether pod id matches a pattern "ns/pod" where
// either side may be "*"; "*" alone matches every pod.
func matchPat(pat, id string) bool {
	if pat == "*" {
		return true
	}
	pns, ppod, _ := strings.Cut(pat, "/")
	ns, pod, _ := strings.Cut(id, "/")
	return (pns == "*" || pns == ns) && (ppod == "*" || ppod == pod)
}

// expect sets every pair from → to matching the patterns.
func (r *reach) expect(from, to string, v bool) *reach {
	for _, f := range r.pods {
		for _, t := range r.pods {
			if matchPat(from, f) && matchPat(to, t) {
				r.m[[2]string{f, t}] = v
			}
		}
	}
	return r
}

// Helpers that build NetworkPolicy objects as the upstream suite does.

func lbls(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func sel(kv ...string) *metav1.LabelSelector { return &metav1.LabelSelector{MatchLabels: lbls(kv...)} }

func selExpr(key string, op metav1.LabelSelectorOperator, values ...string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: key, Operator: op, Values: values}}}
}

type npOpt func(*networkingv1.NetworkPolicy)

func netpol(ns, name string, podSelector *metav1.LabelSelector, opts ...npOpt) *networkingv1.NetworkPolicy {
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: networkingv1.NetworkPolicySpec{PodSelector: *podSelector}}
	for _, o := range opts {
		o(np)
	}
	return np
}

// ingress sets the ingress rules and adds the Ingress policy type, as
// the suite's SetSpecIngressRules.
func ingress(rules ...networkingv1.NetworkPolicyIngressRule) npOpt {
	return func(np *networkingv1.NetworkPolicy) {
		if np.Spec.Ingress == nil {
			np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{}
			np.Spec.PolicyTypes = append(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress)
		}
		np.Spec.Ingress = append(np.Spec.Ingress, rules...)
	}
}

func egress(rules ...networkingv1.NetworkPolicyEgressRule) npOpt {
	return func(np *networkingv1.NetworkPolicy) {
		if np.Spec.Egress == nil {
			np.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{}
			np.Spec.PolicyTypes = append(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress)
		}
		np.Spec.Egress = append(np.Spec.Egress, rules...)
	}
}

func peerPods(podSel *metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{PodSelector: podSel}
}

func peerNS(nsSel *metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{NamespaceSelector: nsSel}
}

func peerBoth(nsSel, podSel *metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{NamespaceSelector: nsSel, PodSelector: podSel}
}

func peerBlock(cidr string, except ...string) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: cidr, Except: except}}
}

func proto(p corev1.Protocol) *corev1.Protocol { return &p }

// port is a numeric port; protocol nil means the API default (TCP).
func port(n int32, p *corev1.Protocol) networkingv1.NetworkPolicyPort {
	v := intstr.FromInt32(n)
	return networkingv1.NetworkPolicyPort{Port: &v, Protocol: p}
}

func portRange(n, end int32, p *corev1.Protocol) networkingv1.NetworkPolicyPort {
	pp := port(n, p)
	pp.EndPort = &end
	return pp
}

func namedPort(name string, p *corev1.Protocol) networkingv1.NetworkPolicyPort {
	v := intstr.FromString(name)
	return networkingv1.NetworkPolicyPort{Port: &v, Protocol: p}
}

func in(from []networkingv1.NetworkPolicyPeer, ports ...networkingv1.NetworkPolicyPort) networkingv1.NetworkPolicyIngressRule {
	return networkingv1.NetworkPolicyIngressRule{From: from, Ports: ports}
}

func out(to []networkingv1.NetworkPolicyPeer, ports ...networkingv1.NetworkPolicyPort) networkingv1.NetworkPolicyEgressRule {
	return networkingv1.NetworkPolicyEgressRule{To: to, Ports: ports}
}

func peers(p ...networkingv1.NetworkPolicyPeer) []networkingv1.NetworkPolicyPeer { return p }
