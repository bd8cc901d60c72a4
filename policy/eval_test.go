package policy

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestVerdictExplains: a verdict names the rules that allow, or the
// policies whose default deny denies, or why nothing was judged: what
// `weft policy explain` prints.
func TestVerdictExplains(t *testing.T) {
	w := e2eWorld()
	w.create(netpol("x", "deny-all", everyPd, ingress(), egress()))
	w.create(netpol("x", "web", sel("pod", "a"), ingress(in(peers(peerNS(sel("ns", "y"))), port(80, nil)), in(nil, namedPort("serve-80-tcp", nil)))))
	w.create(netpol("y", "out", sel("pod", "b"), egress(out(peers(peerBlock("10.32.0.0/16")), port(80, nil)))))
	m := w.model(t)
	ep := func(id string) Endpoint { return PodEndpoint(w.pod(t, id)) }
	node := func(n string) Endpoint { return m.Endpoint(w.nodes[n[1]-'1'].Addrs[0]) }
	tests := []struct {
		name     string
		src, dst Endpoint
		port     uint16
		proto    Protocol
		want     string
		allowed  bool
		rules    []RuleRef
	}{
		{"two rules allow", ep("y/a"), ep("x/a"), 80, TCP,
			"allowed (egress allowed: no policy selects the pod; ingress allowed: by x/web rule 0, x/web rule 1)", true,
			[]RuleRef{{"x/web", Ingress, 0}, {"x/web", Ingress, 1}}},
		{"default deny names every selecting policy", ep("y/a"), ep("x/a"), 81, TCP,
			"denied (egress allowed: no policy selects the pod; ingress denied: default deny: selected by x/deny-all, x/web, no rule allows)", false, nil},
		{"both sides deny", ep("x/b"), ep("x/a"), 81, UDP,
			"denied (egress denied: default deny: selected by x/deny-all, no rule allows; ingress denied: default deny: selected by x/deny-all, x/web, no rule allows)", false, nil},
		{"egress by ipBlock to a pod address", ep("y/b"), ep("z/a"), 80, TCP,
			"allowed (egress allowed: by y/out rule 0; ingress allowed: no policy selects the pod)", true, nil},
		{"the pod's own node", node("n1"), ep("x/a"), 9999, TCP,
			"allowed (egress allowed: not a pod, not judged; ingress allowed: from the pod's own node)", true, nil},
		{"another node is an address", node("n2"), ep("x/a"), 81, TCP,
			"denied (egress allowed: not a pod, not judged; ingress denied: default deny: selected by x/deny-all, x/web, no rule allows)", false, nil},
		{"egress to the pod's own node is judged", ep("x/a"), node("n1"), 53, UDP,
			"denied (egress denied: default deny: selected by x/deny-all, no rule allows; ingress allowed: not a pod, not judged)", false, nil},
	}
	// n1 runs x/a, y/c, z/b: x/a is isolated; n3 runs x/c (deny-all),
	// y/b (out) and z/a.
	for node, want := range map[string]int{"n1": 1, "n3": 2} {
		if n := m.Isolated(node); n != want {
			t.Errorf("Isolated(%s) = %d; want %d", node, n, want)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := Evaluate(m, tt.src, tt.dst, tt.port, tt.proto)
			if v.String() != tt.want || v.Allowed() != tt.allowed {
				t.Errorf("Evaluate(%v, %v, %d/%v) = %q; want %q", tt.src, tt.dst, tt.port, tt.proto, v, tt.want)
			}
			if tt.rules != nil {
				if d := cmp.Diff(tt.rules, v.Ingress.Rules); d != "" {
					t.Errorf("ingress rules (-want +got):\n%s", d)
				}
			}
		})
	}
}

// TestModelProblems: what NewModel leaves out is reported, and the rest
// is kept.
func TestModelProblems(t *testing.T) {
	ip := netip.MustParseAddr("10.32.0.5")
	np, err := Convert(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "sctp"},
		Spec: networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{in(nil, port(80, sctpP))}}}, Capabilities{})
	if np == nil || !errors.Is(err, ErrUnsupported) {
		t.Fatalf("Convert = %v, %v", np, err)
	}
	m := NewModel(Snapshot{
		Pods: []Pod{
			{Namespace: "x", Name: "a", IP: ip, Node: "n1"},
			{Namespace: "x", Name: "b", IP: ip, Node: "n1"},
			{Namespace: "x", Name: "v6", IP: netip.MustParseAddr("fd00::1"), Node: "n1"},
		},
		Policies: []*NetworkPolicy{np, nil},
	})
	var got []string
	for _, e := range m.Problems() {
		got = append(got, e.Error())
	}
	want := []string{
		"pod x/b: address 10.32.0.5 is also pod x/a's: conflict; ignoring its address",
		"pod x/v6: address fd00::1: not supported by weft: the pod network is IPv4",
		"networkpolicy x/sctp: ingress rule 0 port 0: protocol SCTP: not supported by weft: this kernel has no SCTP, so the port never matches (the policy still isolates its pods)",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("Problems (-want +got):\n%s", d)
	}
	if e := m.Endpoint(ip); e.Pod == nil || e.Pod.Name != "a" {
		t.Errorf("Endpoint(%v) = %v; want x/a", ip, e)
	}
	// x is listed nowhere: it has the name label the API server sets.
	if l := m.namespaceLabels("x"); l[NamespaceNameLabel] != "x" {
		t.Errorf("labels of an unlisted namespace = %v", l)
	}
	// The SCTP policy isolates x/a for ingress.
	if v := Evaluate(m, m.Endpoint(netip.MustParseAddr("8.8.8.8")), m.Endpoint(ip), 80, TCP); v.Allowed() || !strings.Contains(v.String(), "x/sctp") {
		t.Errorf("Evaluate to a pod isolated by an SCTP-only policy = %v; want denied by x/sctp", v)
	}
}

// TestCompileGolden shows the table for one small case in full.
func TestCompileGolden(t *testing.T) {
	w := e2eWorld()
	w.create(netpol("x", "web", sel("pod", "a"), ingress(in(peers(peerPods(sel("pod", "b")), peerBlock("192.168.0.0/16", "192.168.1.0/24")),
		port(80, nil), namedPort("serve-81-udp", udpP)))))
	w.create(netpol("x", "out", sel("pod", "a"), egress(out(peers(peerNS(sel("ns", "y"))), namedPort("serve-80-tcp", nil)))))
	p, err := Compile(w.model(t), "n1")
	if err != nil {
		t.Fatal(err)
	}
	want := `table ip weft-policy {
	set cidrs-b080e1769f988db3 {
		type ipv4_addr
		flags interval
		comment "192.168.0.0/16 except 192.168.1.0/24"
		elements = { 192.168.0.0-192.168.0.255, 192.168.2.0-192.168.255.255 }
	}
	map egress {
		type ipv4_addr : verdict
		elements = { 10.32.1.10 : jump egress-10.32.1.10 }
	}
	map ingress {
		type ipv4_addr : verdict
		elements = { 10.32.1.10 : jump ingress-10.32.1.10 }
	}
	set named-6b7d64c58d8f6bd5 {
		type ipv4_addr . inet_service
		comment "TCP/serve-80-tcp of all pods in namespaces ns=y"
		elements = { 10.32.1.15 . 80, 10.32.2.13 . 80, 10.32.3.14 . 80 }
	}
	set pods-82dedc9ba628ed5a {
		type ipv4_addr
		comment "pods pod=b in namespace x"
		elements = { 10.32.2.11 }
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		iifname "wf*" fib saddr . iif oif missing counter drop
		ct state established,related accept
		ip saddr vmap @egress
		ip daddr vmap @ingress
	}
	chain input {
		type filter hook input priority filter; policy accept;
		iifname "wf*" fib saddr . iif oif missing counter drop
		ct state established,related accept
		ip saddr vmap @egress
	}
	chain egress-10.32.1.10 {
		meta l4proto tcp ip daddr . th dport @named-6b7d64c58d8f6bd5 return comment "x/out egress rule 0"
		limit rate 10/second burst 20 packets log prefix "weft-policy deny egress x/a" group 6784
		counter drop
	}
	chain ingress-10.32.1.10 {
		meta l4proto tcp th dport 80 ip saddr @pods-82dedc9ba628ed5a accept comment "x/web ingress rule 0"
		meta l4proto tcp th dport 80 ip saddr @cidrs-b080e1769f988db3 accept comment "x/web ingress rule 0"
		meta l4proto udp th dport 81 ip saddr @pods-82dedc9ba628ed5a accept comment "x/web ingress rule 0"
		meta l4proto udp th dport 81 ip saddr @cidrs-b080e1769f988db3 accept comment "x/web ingress rule 0"
		limit rate 10/second burst 20 packets log prefix "weft-policy deny ingress x/a" group 6784
		counter drop
	}
}
`
	if d := cmp.Diff(want, p.String()); d != "" {
		t.Errorf("Compile(n1) (-want +got):\n%s", d)
	}
}

// TestLogPrefixRoundTrip: what LogPrefix writes, ParseLogPrefix reads
// back; other prefixes are refused.
func TestLogPrefixRoundTrip(t *testing.T) {
	p := &Pod{Namespace: "x", Name: "a"}
	for _, d := range []Direction{Ingress, Egress} {
		dir, pod, ok := ParseLogPrefix(LogPrefix(d, p))
		if !ok || dir != d.String() || pod != "x/a" {
			t.Errorf("ParseLogPrefix(LogPrefix(%v)) = %q, %q, %v", d, dir, pod, ok)
		}
	}
	for _, s := range []string{"", "weft-policy deny", "weft-policy deny sideways x/a", "weft-policy deny ingress xa", "other ingress x/a"} {
		if _, _, ok := ParseLogPrefix(s); ok {
			t.Errorf("ParseLogPrefix(%q) accepted", s)
		}
	}
}

// TestParseProtocol: ParseProtocol reads what String writes.
func TestParseProtocol(t *testing.T) {
	for _, p := range []Protocol{TCP, UDP, SCTP, ICMP} {
		for _, s := range []string{p.String(), strings.ToLower(p.String())} {
			if got, ok := ParseProtocol(s); !ok || got != p {
				t.Errorf("ParseProtocol(%q) = %v, %v; want %v", s, got, ok, p)
			}
		}
	}
	if got, ok := ParseProtocol(""); !ok || got != TCP {
		t.Errorf("ParseProtocol(\"\") = %v, %v; want TCP", got, ok)
	}
	if _, ok := ParseProtocol("GRE"); ok {
		t.Error("ParseProtocol(\"GRE\") accepted")
	}
}
