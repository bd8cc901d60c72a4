package policy

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The cases of the upstream netpol e2e suite (test/e2e/network/netpol,
// Kubernetes v1.37) that apply without SCTP, on its model, each as steps
// (create, update or delete policies, change labels) followed by probes
// with an expected truth table built as the suite builds it. Every probe
// checks the evaluator and the compiled programs of all three nodes (the
// packet walks the programs of the nodes it passes) against the table.
// Loopback pairs are ignored, as upstream ignores them.

type probe struct {
	port  uint16
	proto Protocol
	want  func(w *world) *reach
}

type step struct {
	do     func(t *testing.T, w *world)
	probes []probe
}

func tcp(port uint16, want func(w *world) *reach) probe { return probe{port, TCP, want} }

func create(nps ...*networkingv1.NetworkPolicy) func(*testing.T, *world) {
	return func(_ *testing.T, w *world) {
		for _, np := range nps {
			w.create(np)
		}
	}
}

func allOpen(w *world) *reach { return newReach(w, true) }

var (
	nsLabel = NamespaceNameLabel
	everyNS = &metav1.LabelSelector{}
	everyPd = &metav1.LabelSelector{}
	tcpP    = proto(corev1.ProtocolTCP)
	udpP    = proto(corev1.ProtocolUDP)
	sctpP   = proto(corev1.ProtocolSCTP)
)

func e2eCases() []struct {
	name  string
	steps []step
} {
	type c = struct {
		name  string
		steps []step
	}
	return []c{
		{"default-deny-ingress", []step{{create(netpol("x", "deny-ingress", everyPd, ingress())),
			[]probe{tcp(80, func(w *world) *reach { return newReach(w, true).expect("*", "x/*", false) })}}}},
		{"default-deny-all", []step{{create(netpol("x", "deny-all", everyPd, ingress(), egress())),
			[]probe{tcp(80, func(w *world) *reach {
				return newReach(w, true).expect("*", "x/*", false).expect("x/*", "*", false)
			})}}}},
		{"allow from pods within server namespace by podSelector", []step{{
			create(netpol("x", "x-a-allows-x-b", sel("pod", "a"), ingress(in(peers(peerPods(sel("pod", "b"))))))),
			[]probe{tcp(80, func(w *world) *reach {
				return newReach(w, true).expect("*", "x/a", false).expect("x/b", "x/a", true)
			})}}}},
		{"allow ingress for a target", []step{{
			create(netpol("x", "deny-all", everyPd, ingress()),
				netpol("x", "allow-all-to-a", sel("pod", "a"), ingress(in(peers(peerBoth(everyNS, everyPd)))))),
			[]probe{tcp(80, func(w *world) *reach {
				return newReach(w, true).expect("*", "x/*", false).expect("*", "x/a", true)
			})}}}},
		{"allow ingress from pods in all namespaces", []step{{
			create(netpol("x", "allow-from-another-ns", sel("pod", "a"), ingress(in(peers(peerNS(everyNS)))))),
			[]probe{tcp(80, allOpen)}}}},
		{"allow only from a different namespace by namespaceSelector", []step{{
			create(netpol("x", "allow-client-a-via-ns-selector", sel("pod", "a"), ingress(in(peers(peerNS(sel(nsLabel, "y"))))))),
			[]probe{tcp(80, func(w *world) *reach {
				return newReach(w, true).expect("x/*", "x/a", false).expect("z/*", "x/a", false)
			})}}}},
		{"podSelector with matchExpressions", []step{{
			create(netpol("x", "x-a-allows-x-b", sel("pod", "a"), ingress(in(peers(peerPods(selExpr("pod", metav1.LabelSelectorOpIn, "b"))))))),
			[]probe{tcp(80, func(w *world) *reach {
				return newReach(w, true).expect("*", "x/a", false).expect("x/b", "x/a", true)
			})}}}},
		{"namespaceSelector with matchExpressions", []step{{
			create(netpol("x", "allow-ns-y-match-selector", sel("pod", "a"), ingress(in(peers(peerNS(selExpr(nsLabel, metav1.LabelSelectorOpIn, "y"))))))),
			[]probe{tcp(80, func(w *world) *reach {
				return newReach(w, true).expect("x/*", "x/a", false).expect("z/*", "x/a", false)
			})}}}},
		{"podSelector or namespaceSelector (separate peers)", []step{{
			create(netpol("x", "allow-ns-y-match-selector", sel("pod", "a"), ingress(in(peers(
				peerNS(selExpr(nsLabel, metav1.LabelSelectorOpNotIn, "x")), peerPods(sel("pod", "b"))))))),
			[]probe{tcp(80, func(w *world) *reach {
				return newReach(w, true).expect("x/a", "x/a", false).expect("x/c", "x/a", false)
			})}}}},
		{"podSelector and namespaceSelector (one peer)", []step{{
			create(netpol("x", "allow-ns-y-podselector-and-nsselector", sel("pod", "a"), ingress(in(peers(
				peerBoth(selExpr(nsLabel, metav1.LabelSelectorOpNotIn, "x"), sel("pod", "b"))))))),
			[]probe{tcp(80, func(w *world) *reach {
				return newReach(w, true).expect("*", "x/a", false).expect("y/b", "x/a", true).expect("z/b", "x/a", true)
			})}}}},
		{"multiple podSelectors and namespaceSelectors", []step{{
			create(netpol("x", "allow-ns-y-z-pod-b-c", sel("pod", "a"), ingress(in(peers(
				peerBoth(selExpr(nsLabel, metav1.LabelSelectorOpNotIn, "x"), selExpr("pod", metav1.LabelSelectorOpIn, "b", "c"))))))),
			[]probe{tcp(80, func(w *world) *reach {
				return newReach(w, true).expect("*", "x/a", false).
					expect("y/b", "x/a", true).expect("y/c", "x/a", true).expect("z/b", "x/a", true).expect("z/c", "x/a", true)
			})}}}},
		{"any podSelectors", []step{{
			create(netpol("x", "allow-ns-x-pod-b-c", sel("pod", "a"), ingress(in(peers(peerPods(sel("pod", "b")), peerPods(sel("pod", "c"))))))),
			[]probe{tcp(80, func(w *world) *reach {
				return newReach(w, true).expect("*", "x/a", false).expect("x/b", "x/a", true).expect("x/c", "x/a", true)
			})}}}},
		{"only from a pod in a different namespace by podSelector and namespaceSelector", []step{{
			create(netpol("x", "allow-ns-y-pod-a-via-namespace-pod-selector", sel("pod", "a"), ingress(in(peers(peerBoth(sel(nsLabel, "y"), sel("pod", "a"))))))),
			[]probe{tcp(80, func(w *world) *reach {
				return newReach(w, true).expect("*", "x/a", false).expect("y/a", "x/a", true)
			})}}}},
		{"ports", []step{{
			create(netpol("x", "allow-client-a-via-ns-selector", sel("pod", "a"), ingress(in(peers(peerNS(sel(nsLabel, "y"))), port(81, tcpP))))),
			[]probe{
				tcp(81, func(w *world) *reach {
					return newReach(w, true).expect("x/*", "x/a", false).expect("z/*", "x/a", false)
				}),
				tcp(80, func(w *world) *reach { return newReach(w, true).expect("*", "x/a", false) }),
			}}}},
		{"multiple stacked policies with overlapping podSelectors", []step{
			{create(netpol("x", "allow-client-a-via-ns-selector", sel("pod", "a"), ingress(in(peers(peerNS(sel(nsLabel, "y"))), port(81, tcpP))))),
				[]probe{
					tcp(81, func(w *world) *reach {
						return newReach(w, true).expect("x/*", "x/a", false).expect("z/*", "x/a", false)
					}),
					tcp(80, func(w *world) *reach { return newReach(w, true).expect("*", "x/a", false) }),
				}},
			{create(netpol("x", "allow-client-a-via-ns-selector-80", sel("pod", "a"), ingress(in(peers(peerNS(sel(nsLabel, "y"))), port(80, tcpP))))),
				[]probe{tcp(80, func(w *world) *reach {
					return newReach(w, true).expect("x/*", "x/a", false).expect("z/*", "x/a", false)
				})}},
		}},
		{"allow-all", []step{{create(netpol("x", "allow-all", sel(), ingress(in(nil)))),
			[]probe{tcp(80, allOpen), tcp(81, allOpen)}}}},
		{"ingress on one named port", []step{{
			create(netpol("x", "allow-all", sel(), ingress(in(nil, namedPort("serve-81-tcp", nil))))),
			[]probe{
				tcp(81, allOpen),
				tcp(80, func(w *world) *reach { return newReach(w, true).expect("*", "x/*", false) }),
				{81, UDP, func(w *world) *reach { return newReach(w, true).expect("*", "x/*", false) }},
			}}}},
		{"ingress from namespace on one named port", []step{{
			create(netpol("x", "allow-client-a-via-ns-selector-80", sel("pod", "a"), ingress(in(peers(peerNS(sel(nsLabel, "y"))), namedPort("serve-80-tcp", tcpP))))),
			[]probe{
				tcp(80, func(w *world) *reach {
					return newReach(w, true).expect("x/*", "x/a", false).expect("z/*", "x/a", false)
				}),
				tcp(81, func(w *world) *reach { return newReach(w, true).expect("*", "x/a", false) }),
			}}}},
		{"egress on one named port", []step{{
			create(netpol("x", "allow-egress", sel(), egress(out(nil, namedPort("serve-80-tcp", nil))))),
			[]probe{
				tcp(80, allOpen),
				tcp(81, func(w *world) *reach { return newReach(w, true).expect("x/*", "*", false) }),
			}}}},
		{"no all ports when the named port does not exist", []step{{
			create(netpol("x", "allow-ingress-on-nonexistent-port", sel("pod", "a"), ingress(in(nil, namedPort("no-such-port", tcpP))))),
			[]probe{tcp(80, func(w *world) *reach { return newReach(w, true).expect("*", "x/a", false) })}}}},
		{"updated policy", []step{
			{create(netpol("x", "allow-all-mutate-to-deny-all", sel(), ingress(in(nil)))), []probe{tcp(81, allOpen)}},
			{create(netpol("x", "allow-all-mutate-to-deny-all", sel(), ingress())),
				[]probe{tcp(81, func(w *world) *reach { return newReach(w, true).expect("*", "x/*", false) })}},
		}},
		{"ingress from updated namespace", []step{
			{create(netpol("x", "allow-client-a-via-ns-selector", sel("pod", "a"), ingress(in(peers(peerNS(sel("ns2", "updated"))))))),
				[]probe{tcp(80, func(w *world) *reach { return newReach(w, true).expect("*", "x/a", false) })}},
			{func(_ *testing.T, w *world) { w.namespaces[1].Labels["ns2"] = "updated" },
				[]probe{tcp(80, func(w *world) *reach {
					return newReach(w, true).expect("*", "x/a", false).expect("y/*", "*", true)
				})}},
		}},
		{"ingress from updated pod", []step{
			{create(netpol("x", "allow-client-a-via-pod-selector", sel("pod", "a"), ingress(in(peers(peerPods(sel("pod", "b", "pod2", "updated"))))))),
				[]probe{tcp(80, func(w *world) *reach { return newReach(w, true).expect("*", "x/a", false) })}},
			{func(t *testing.T, w *world) { w.pod(t, "x/b").Labels = lbls("pod", "b", "pod2", "updated") },
				[]probe{tcp(80, func(w *world) *reach {
					return newReach(w, true).expect("*", "x/a", false).expect("x/b", "x/a", true)
				})}},
		}},
		{"deny ingress from pods on other namespaces", []step{{
			create(netpol("x", "deny-empty-policy", everyPd, ingress(in(peers(peerPods(sel())))))),
			[]probe{tcp(80, func(w *world) *reach {
				return newReach(w, true).expect("y/*", "x/*", false).expect("z/*", "x/*", false)
			})}}}},
		{"deny ingress to updated pod", []step{
			{create(netpol("x", "deny-ingress-via-label-selector", sel("target", "isolated"), ingress())), []probe{tcp(80, allOpen)}},
			{func(t *testing.T, w *world) { w.pod(t, "x/a").Labels["target"] = "isolated" },
				[]probe{tcp(80, func(w *world) *reach { return newReach(w, true).expect("*", "x/a", false) })}},
		}},
		{"deny egress by podSelector", []step{{create(netpol("x", "deny-egress-pod-a", sel("pod", "a"), egress())),
			[]probe{tcp(80, func(w *world) *reach { return newReach(w, true).expect("x/a", "*", false) })}}}},
		{"deny egress from all pods in a namespace", []step{{create(netpol("x", "deny-egress-ns-x", everyPd, egress())),
			[]probe{tcp(80, func(w *world) *reach { return newReach(w, true).expect("x/*", "*", false) })}}}},
		{"ingress and egress together", []step{{
			create(func() *networkingv1.NetworkPolicy {
				np := netpol("x", "allow-client-a-via-pod-selector", sel("pod", "a"), ingress(in(peers(peerPods(sel("pod", "b"))))))
				np.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{out(nil, port(80, nil))}
				np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress, networkingv1.PolicyTypeIngress}
				return np
			}()),
			[]probe{
				tcp(80, func(w *world) *reach {
					return newReach(w, true).expect("*", "x/a", false).expect("x/b", "x/a", true)
				}),
				tcp(81, func(w *world) *reach {
					return newReach(w, true).expect("*", "x/a", false).expect("x/a", "*", false).expect("x/b", "x/a", true)
				}),
			}}}},
		{"egress denied on the client even if the server allows", []step{{
			create(netpol("x", "allow-to-ns-y-pod-a", sel("pod", "a"), egress(out(peers(peerBoth(sel(nsLabel, "y"), sel("pod", "a")))))),
				netpol("y", "allow-from-xa-on-ya-match-selector", sel("pod", "a"), ingress(in(peers(peerBoth(sel(nsLabel, "x"), sel("pod", "a")))))),
				netpol("y", "allow-from-xa-on-yb-match-selector", sel("pod", "b"), ingress(in(peers(peerBoth(sel(nsLabel, "x"), sel("pod", "a"))))))),
			[]probe{tcp(80, func(w *world) *reach {
				return newReach(w, true).expect("x/a", "*", false).expect("*", "y/a", false).
					expect("x/a", "y/a", true).expect("*", "y/b", false)
			})}}}},
		{"egress to a server in another namespace by podSelector and namespaceSelector", []step{{
			create(netpol("x", "allow-to-ns-y-pod-a", sel("pod", "a"), egress(out(peers(peerBoth(sel(nsLabel, "y"), sel("pod", "a"))))))),
			[]probe{tcp(80, func(w *world) *reach {
				return newReach(w, true).expect("x/a", "*", false).expect("x/a", "y/a", true)
			})}}}},
		{"any port on a specific protocol", []step{{
			create(netpol("x", "allow-ingress-by-proto", sel("pod", "a"), ingress(in(nil, networkingv1.NetworkPolicyPort{Protocol: tcpP})))),
			[]probe{
				tcp(80, allOpen),
				{80, UDP, func(w *world) *reach { return newReach(w, true).expect("*", "x/a", false) }},
			}}}},
		{"ingress allow-all takes precedence", []step{
			{create(netpol("x", "allow-ingress-port-80", sel(), ingress(in(nil, port(80, nil))))),
				[]probe{tcp(81, func(w *world) *reach { return newReach(w, true).expect("*", "x/*", false) })}},
			{create(netpol("x", "allow-ingress", sel(), ingress(in(nil)))), []probe{tcp(81, allOpen)}},
		}},
		{"egress allow-all takes precedence", []step{
			{create(netpol("x", "allow-egress-port-80", sel(), egress(out(nil, port(80, nil))))),
				[]probe{tcp(81, func(w *world) *reach { return newReach(w, true).expect("x/*", "*", false) })}},
			{create(netpol("x", "allow-egress", sel(), egress(out(nil)))), []probe{tcp(81, allOpen)}},
		}},
		{"stop enforcing after delete", []step{
			{create(netpol("x", "deny-all", everyPd, ingress(), egress())),
				[]probe{tcp(80, func(w *world) *reach {
					return newReach(w, true).expect("x/*", "*", false).expect("*", "x/*", false)
				})}},
			{func(_ *testing.T, w *world) { w.policies = nil }, []probe{tcp(80, allOpen)}},
		}},
		{"egress to a server in a CIDR block", []step{{
			func(t *testing.T, w *world) {
				w.create(netpol("x", "allow-client-a-via-cidr-egress-rule", sel("pod", "a"),
					egress(out(peers(peerBlock(w.pod(t, "y/b").IP.String()+"/32"))))))
			},
			[]probe{tcp(80, func(w *world) *reach {
				return newReach(w, true).expect("x/a", "*", false).expect("x/a", "y/b", true)
			})}}}},
		{"except clause of a CIDR block", []step{{
			func(t *testing.T, w *world) {
				ip := w.pod(t, "x/b").IP
				w.create(netpol("x", "allow-client-a-via-cidr-egress-rule", sel("pod", "a"),
					egress(out(peers(peerBlock(netip.PrefixFrom(ip, 4).Masked().String(), ip.String()+"/32"))))))
			},
			[]probe{tcp(80, func(w *world) *reach { return newReach(w, true).expect("x/a", "x/b", false) })}}}},
		{"an IP in both a CIDR and an except is allowed by another policy", []step{
			{func(t *testing.T, w *world) {
				ip := w.pod(t, "x/b").IP
				w.create(netpol("x", "allow-client-a-via-cidr-egress-rule", sel("pod", "a"),
					egress(out(peers(peerBlock(netip.PrefixFrom(ip, 4).Masked().String(), ip.String()+"/32"))))))
			}, []probe{tcp(80, func(w *world) *reach { return newReach(w, true).expect("x/a", "x/b", false) })}},
			{func(t *testing.T, w *world) {
				w.create(netpol("x", "allow-client-a-via-cidr-egress-rule", sel("pod", "a"),
					egress(out(peers(peerBlock(w.pod(t, "x/b").IP.String()+"/32"))))))
			}, []probe{tcp(80, func(w *world) *reach {
				return newReach(w, true).expect("x/a", "*", false).expect("x/a", "x/b", true)
			})}},
		}},
		{"ingress and egress controlled independently", []step{
			{create(netpol("x", "allow-egress-for-target", sel("pod", "a"), egress(out(nil)))), []probe{tcp(80, allOpen)}},
			{create(netpol("x", "deny-ingress-via-label-selector", sel("pod", "a"), ingress())),
				[]probe{tcp(80, func(w *world) *reach { return newReach(w, true).expect("*", "x/a", false) })}},
		}},
		{"SCTP is not TCP, even without SCTP", []step{{
			create(netpol("x", "deny-ingress", everyPd, ingress()),
				netpol("x", "allow-only-sctp-ingress-on-port-81", sel("pod", "a"), ingress(in(nil, port(81, sctpP))))),
			[]probe{tcp(81, func(w *world) *reach { return newReach(w, true).expect("*", "x/*", false) })}}}},
		{"a policy allowing only SCTP isolates, even without SCTP", []step{{
			create(netpol("x", "allow-only-sctp-ingress-on-port-80", sel("pod", "a"), ingress(in(nil, port(80, sctpP))))),
			[]probe{tcp(81, func(w *world) *reach { return newReach(w, true).expect("*", "x/a", false) })}}}},
		{"TCP is not allowed by a UDP-only policy", []step{{
			create(netpol("x", "allow-only-udp-ingress-on-port-81", sel("pod", "a"), ingress(in(nil, port(81, udpP))))),
			[]probe{
				tcp(81, func(w *world) *reach { return newReach(w, true).expect("*", "x/a", false) }),
				{81, UDP, allOpen},
			}}}},
		{"namespaceSelector matchLabels on the default namespace label", []step{{
			create(netpol("x", "allow-client-a-via-ns-selector-for-immutable-ns-label", sel("pod", "a"), ingress(in(peers(peerNS(sel(nsLabel, "y"))))))),
			[]probe{tcp(80, func(w *world) *reach {
				return newReach(w, true).expect("x/*", "x/a", false).expect("z/*", "x/a", false)
			})}}}},
		{"egress namespaceSelector matchExpressions on the default namespace label", []step{{
			create(netpol("x", "allow-ns-y-match-selector-for-immutable-ns-label", sel("pod", "a"),
				egress(out(peers(peerNS(selExpr(nsLabel, metav1.LabelSelectorOpNotIn, "y"))))))),
			[]probe{tcp(80, func(w *world) *reach { return newReach(w, true).expect("x/a", "y/*", false) })}}}},
		// Port ranges (endPort); the suite tests only their validation, so
		// these come from the older suite and cyclonus.
		{"egress port range", []step{{
			create(netpol("x", "allow-egress-80-81", sel("pod", "a"), egress(out(nil, portRange(80, 81, nil))))),
			[]probe{tcp(80, allOpen), tcp(81, allOpen),
				{80, UDP, func(w *world) *reach { return newReach(w, true).expect("x/a", "*", false) }}},
		}}},
		{"ingress port range excluding a port", []step{{
			create(netpol("x", "allow-81-90", sel("pod", "a"), ingress(in(peers(peerNS(everyNS)), portRange(81, 90, tcpP))))),
			[]probe{tcp(81, allOpen), tcp(80, func(w *world) *reach { return newReach(w, true).expect("*", "x/a", false) })},
		}}},
		{"pod label change moves a pod out of a policy", []step{
			{create(netpol("x", "deny-a", sel("pod", "a"), ingress(), egress())),
				[]probe{tcp(80, func(w *world) *reach {
					return newReach(w, true).expect("*", "x/a", false).expect("x/a", "*", false)
				})}},
			{func(t *testing.T, w *world) { w.pod(t, "x/a").Labels = lbls("pod", "a2") }, []probe{tcp(80, allOpen)}},
		}},
	}
}

func TestE2ESuite(t *testing.T) {
	for _, tc := range e2eCases() {
		t.Run(tc.name, func(t *testing.T) {
			w := e2eWorld()
			for i, s := range tc.steps {
				s.do(t, w)
				m := w.model(t)
				progs := w.programs(t, m)
				for _, pr := range s.probes {
					checkMatrix(t, fmt.Sprintf("step %d %v/%d", i, pr.proto, pr.port), w, m, progs, pr)
				}
			}
		})
	}
}

// checkMatrix probes every pod pair but loopback with the evaluator and
// the compiled programs.
func checkMatrix(t *testing.T, what string, w *world, m *Model, progs map[string]*Program, pr probe) {
	t.Helper()
	want := pr.want(w)
	var bad []string
	for _, src := range m.Pods() {
		for _, dst := range m.Pods() {
			if src == dst {
				continue
			}
			key := [2]string{src.Namespace + "/" + src.Name, dst.Namespace + "/" + dst.Name}
			v := Evaluate(m, PodEndpoint(src), PodEndpoint(dst), pr.port, pr.proto)
			got, js := judgeCluster(progs, PodEndpoint(src), PodEndpoint(dst), pr.port, pr.proto)
			if v.Allowed() != want.m[key] {
				bad = append(bad, fmt.Sprintf("Evaluate %s → %s = %v; want allowed=%v", key[0], key[1], v, want.m[key]))
			}
			if got != want.m[key] {
				bad = append(bad, fmt.Sprintf("programs %s → %s allowed=%v (%v); want %v", key[0], key[1], got, js, want.m[key]))
			}
		}
	}
	if len(bad) > 0 {
		t.Errorf("%s:\n%s", what, strings.Join(bad, "\n"))
	}
}
