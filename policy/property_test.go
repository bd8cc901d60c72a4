package policy

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"pgregory.net/rapid"

	corev1 "k8s.io/api/core/v1"
)

// TestCompileAgreesWithEvaluate: for generated clusters and policies, the
// compiled programs of every node, run packet by packet, allow exactly
// what the evaluator allows, for every pair of endpoints (pods, the
// nodes' own addresses, addresses outside and inside the pod range that
// are no pod), port and protocol; and a drop happens in the chain of the
// side the evaluator denies, whose log prefix names the pod.
func TestCompileAgreesWithEvaluate(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := genWorld(t)
		m := w.model(t)
		progs := w.programs(t, m)
		for n, p := range progs {
			for _, s := range p.Sets {
				if !slices.IsSortedFunc(s.Elems, func(a, b Elem) int {
					return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Port, b.Port))
				}) || len(slices.Compact(slices.Clone(s.Elems))) != len(s.Elems) {
					t.Fatalf("node %s set %s: elements not sorted and distinct: %v", n, s.Name, s.Elems)
				}
			}
		}
		var eps []Endpoint
		for _, p := range m.Pods() {
			if p.IP.IsValid() {
				eps = append(eps, PodEndpoint(p))
			}
		}
		for _, n := range w.nodes {
			for _, a := range n.Addrs {
				eps = append(eps, m.Endpoint(a))
			}
		}
		for _, a := range []string{"8.8.8.8", "10.32.9.9", "10.33.0.1"} {
			eps = append(eps, m.Endpoint(netip.MustParseAddr(a)))
		}
		for _, src := range eps {
			for _, dst := range eps {
				for _, pr := range []Protocol{TCP, UDP, SCTP, ICMP} {
					for _, port := range []uint16{53, 80, 81, 82, 8080} {
						if !pr.hasPorts() && port != 53 {
							continue
						}
						checkAgree(t, m, progs, src, dst, port, pr)
					}
				}
			}
		}
	})
}

func checkAgree(t *rapid.T, m *Model, progs map[string]*Program, src, dst Endpoint, port uint16, pr Protocol) {
	v := Evaluate(m, src, dst, port, pr)
	got, js := judgeCluster(progs, src, dst, port, pr)
	if got != v.Allowed() {
		t.Fatalf("%v → %v %v/%d: programs allow=%v (%v); Evaluate = %v\n%s", src, dst, pr, port, got, js, v, dumpPrograms(progs))
	}
	if got {
		return
	}
	last := js[len(js)-1]
	var wantChain, wantLog string
	if !v.Egress.Allowed {
		wantChain, wantLog = PodChain(Egress, src.IP), LogPrefix(Egress, src.Pod)
	} else {
		wantChain, wantLog = PodChain(Ingress, dst.IP), LogPrefix(Ingress, dst.Pod)
	}
	if last.Chain != wantChain || len(last.Logs) == 0 || last.Logs[len(last.Logs)-1] != wantLog {
		t.Fatalf("%v → %v %v/%d dropped by %v; want chain %q logging %q (Evaluate: %v)", src, dst, pr, port, last, wantChain, wantLog, v)
	}
}

func dumpPrograms(progs map[string]*Program) string {
	s := ""
	for n, p := range progs {
		s += "# " + n + "\n" + p.String()
	}
	return s
}

// genWorld draws a small cluster: up to three namespaces and six pods on
// two nodes, and up to four policies.
func genWorld(t *rapid.T) *world {
	w := &world{caps: Capabilities{SCTP: rapid.Bool().Draw(t, "sctp")}}
	w.nodes = []Node{
		{Name: "n1", Addrs: []netip.Addr{netip.MustParseAddr("192.168.0.1"), netip.MustParseAddr("10.32.0.1")}},
		{Name: "n2", Addrs: []netip.Addr{netip.MustParseAddr("192.168.0.2"), netip.MustParseAddr("10.32.1.1")}},
	}
	nsNames := []string{"x", "y", "z"}[:rapid.IntRange(1, 3).Draw(t, "namespaces")]
	for _, ns := range nsNames {
		w.namespaces = append(w.namespaces, Namespace{Name: ns, Labels: genLabels(t, "ns-"+ns, map[string][]string{"team": {"a", "b"}, "env": {"prod"}})})
	}
	portChoices := []NamedPort{{"http", 80, TCP}, {"http", 8080, TCP}, {"dns", 53, UDP}, {"dns", 53, TCP}, {"web", 81, TCP}, {"web", 81, SCTP}}
	nPods := rapid.IntRange(1, 6).Draw(t, "pods")
	for i := range nPods {
		p := Pod{
			Namespace: rapid.SampledFrom(nsNames).Draw(t, "pod-ns"),
			Name:      fmt.Sprintf("p%d", i),
			Labels:    genLabels(t, "pod", map[string][]string{"pod": {"a", "b", "c"}, "app": {"web", "db"}}),
			Node:      rapid.SampledFrom([]string{"n1", "n2"}).Draw(t, "pod-node"),
		}
		if rapid.IntRange(0, 9).Draw(t, "has-ip") > 0 {
			p.IP = netip.AddrFrom4([4]byte{10, 32, byte(i % 2), byte(10 + i)})
		}
		for _, np := range portChoices {
			if rapid.IntRange(0, 2).Draw(t, "has-port") == 0 {
				p.Ports = append(p.Ports, np)
			}
		}
		w.pods = append(w.pods, p)
	}
	nPol := rapid.IntRange(0, 4).Draw(t, "policies")
	for i := range nPol {
		w.policies = append(w.policies, genPolicy(t, w, nsNames, fmt.Sprintf("np%d", i)))
	}
	return w
}

// genLabels draws a subset of keys, each with one of its values.
func genLabels(t *rapid.T, label string, vocab map[string][]string) map[string]string {
	m := map[string]string{}
	for _, k := range []string{"pod", "app", "team", "env"} {
		vs, ok := vocab[k]
		if ok && rapid.Bool().Draw(t, label+"-"+k) {
			m[k] = rapid.SampledFrom(vs).Draw(t, label+"-"+k+"-value")
		}
	}
	return m
}

func genSelector(t *rapid.T, keys map[string][]string) *metav1.LabelSelector {
	s := &metav1.LabelSelector{}
	switch rapid.IntRange(0, 3).Draw(t, "selector-kind") {
	case 0: // empty: everything
	case 1:
		k := rapid.SampledFrom(sortedKeys(keys)).Draw(t, "key")
		s.MatchLabels = map[string]string{k: rapid.SampledFrom(keys[k]).Draw(t, "value")}
	default:
		k := rapid.SampledFrom(sortedKeys(keys)).Draw(t, "key")
		op := rapid.SampledFrom([]metav1.LabelSelectorOperator{metav1.LabelSelectorOpIn, metav1.LabelSelectorOpNotIn,
			metav1.LabelSelectorOpExists, metav1.LabelSelectorOpDoesNotExist}).Draw(t, "op")
		r := metav1.LabelSelectorRequirement{Key: k, Operator: op}
		if op == metav1.LabelSelectorOpIn || op == metav1.LabelSelectorOpNotIn {
			r.Values = []string{rapid.SampledFrom(keys[k]).Draw(t, "value")}
		}
		s.MatchExpressions = []metav1.LabelSelectorRequirement{r}
	}
	return s
}

func sortedKeys(m map[string][]string) []string {
	var ks []string
	for _, k := range []string{"pod", "app", "team", "env", NamespaceNameLabel} {
		if _, ok := m[k]; ok {
			ks = append(ks, k)
		}
	}
	return ks
}

var (
	podVocab = map[string][]string{"pod": {"a", "b", "c"}, "app": {"web", "db"}}
	nsVocab  = map[string][]string{"team": {"a", "b"}, "env": {"prod"}, NamespaceNameLabel: {"x", "y", "z"}}
)

func genPeer(t *rapid.T, w *world) networkingv1.NetworkPolicyPeer {
	switch rapid.IntRange(0, 4).Draw(t, "peer-kind") {
	case 0:
		return networkingv1.NetworkPolicyPeer{PodSelector: genSelector(t, podVocab)}
	case 1:
		return networkingv1.NetworkPolicyPeer{NamespaceSelector: genSelector(t, nsVocab)}
	case 2:
		return networkingv1.NetworkPolicyPeer{PodSelector: genSelector(t, podVocab), NamespaceSelector: genSelector(t, nsVocab)}
	case 3:
		cidrs := []string{"10.32.0.0/16", "10.32.0.0/24", "10.32.1.0/24", "192.168.0.0/24", "0.0.0.0/0", "10.32.0.10/31", "8.8.8.8/32"}
		for _, p := range w.pods {
			if p.IP.IsValid() {
				cidrs = append(cidrs, p.IP.String()+"/32")
			}
		}
		b := &networkingv1.IPBlock{CIDR: rapid.SampledFrom(cidrs).Draw(t, "cidr")}
		for range rapid.IntRange(0, 2).Draw(t, "excepts") {
			b.Except = append(b.Except, rapid.SampledFrom(cidrs).Draw(t, "except"))
		}
		return networkingv1.NetworkPolicyPeer{IPBlock: b}
	}
	return networkingv1.NetworkPolicyPeer{} // invalid: empty
}

func genPort(t *rapid.T) networkingv1.NetworkPolicyPort {
	var p networkingv1.NetworkPolicyPort
	if rapid.IntRange(0, 3).Draw(t, "proto-set") > 0 {
		pr := rapid.SampledFrom([]corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP}).Draw(t, "proto")
		p.Protocol = &pr
	}
	switch rapid.IntRange(0, 3).Draw(t, "port-kind") {
	case 0: // protocol only
	case 1:
		v := intstr.FromInt32(rapid.SampledFrom([]int32{53, 80, 81, 8080}).Draw(t, "port"))
		p.Port = &v
	case 2:
		lo := rapid.SampledFrom([]int32{53, 80, 81}).Draw(t, "lo")
		hi := lo + rapid.SampledFrom([]int32{0, 1, 100}).Draw(t, "span")
		v := intstr.FromInt32(lo)
		p.Port, p.EndPort = &v, &hi
	case 3:
		v := intstr.FromString(rapid.SampledFrom([]string{"http", "dns", "web", "nope"}).Draw(t, "name"))
		p.Port = &v
	}
	return p
}

func genPolicy(t *rapid.T, w *world, nss []string, name string) *networkingv1.NetworkPolicy {
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: rapid.SampledFrom(nss).Draw(t, "np-ns"), Name: name}}
	np.Spec.PodSelector = *genSelector(t, podVocab)
	if rapid.Bool().Draw(t, "has-ingress") {
		np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{}
		for range rapid.IntRange(0, 2).Draw(t, "ingress-rules") {
			var r networkingv1.NetworkPolicyIngressRule
			for range rapid.IntRange(0, 2).Draw(t, "from") {
				r.From = append(r.From, genPeer(t, w))
			}
			for range rapid.IntRange(0, 2).Draw(t, "ports") {
				r.Ports = append(r.Ports, genPort(t))
			}
			np.Spec.Ingress = append(np.Spec.Ingress, r)
		}
	}
	if rapid.Bool().Draw(t, "has-egress") {
		np.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{}
		for range rapid.IntRange(0, 2).Draw(t, "egress-rules") {
			var r networkingv1.NetworkPolicyEgressRule
			for range rapid.IntRange(0, 2).Draw(t, "to") {
				r.To = append(r.To, genPeer(t, w))
			}
			for range rapid.IntRange(0, 2).Draw(t, "ports") {
				r.Ports = append(r.Ports, genPort(t))
			}
			np.Spec.Egress = append(np.Spec.Egress, r)
		}
	}
	switch rapid.IntRange(0, 3).Draw(t, "types") {
	case 0: // defaulted
	case 1:
		np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	case 2:
		np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	case 3:
		np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
	}
	return np
}
