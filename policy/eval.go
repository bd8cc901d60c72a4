package policy

// The evaluator: the single statement of networking.k8s.io/v1
// NetworkPolicy semantics in weft. The compiler must agree with it on
// every packet (property-tested), and `weft policy explain` prints it.
//
// A connection from src to dst on port/proto is allowed when both sides
// allow it: the egress of src (if src is a pod) and the ingress of dst (if
// dst is a pod). On each side:
//
//  1. A side that is not a pod is not judged.
//  2. Ingress from the pod's own node (its host network namespace) is
//     always allowed: kubelet probes come from there (the API's ingress
//     field doc says so).
//  3. A pod that no policy of its namespace selects for the direction
//     (podSelector matches and policyTypes includes the direction) is not
//     isolated: allowed.
//  4. Otherwise the union of the rules of all those policies decides: one
//     rule that matches allows; none is a default deny.
//
// A rule matches when one of its ports matches (none listed: any port of
// any protocol, ICMP included) and one of its peers matches (none listed:
// anyone). A peer with selectors matches pods only: the podSelector (nil:
// all pods) in the namespaces of the namespaceSelector (nil: the
// policy's own namespace); both set is an AND, separate peers an OR. An
// ipBlock peer matches by address, whatever the address is: pod
// addresses count, nodes' too. That is what upstream implementations do
// and what the e2e suite tests ("should allow egress access to server in
// CIDR block" builds the block from a pod's IP): kube-network-policies
// evaluateIPBlocks (pkg/networkpolicy/networkpolicy.go) checks every
// packet's address; cyclonus IPPeerMatcher (pkg/matcher/ippeermatcher.go)
// likewise. A named port resolves on the destination pod, whatever
// matched the peer (kube-network-policies evaluatePorts is handed the
// destination pod; cyclonus resolves the traffic's port name from the
// destination): on ingress the selected pod's container ports, on egress
// the destination pod's; when the destination is not a pod a named port
// cannot match. A container port matches the named port when its name,
// protocol and number all equal the traffic's.
//
// Traffic from a pod to itself is judged like any other pair. The kernel
// judges it only when it leaves the pod (a hairpin through a Service);
// a pod's connection to its own address never leaves its network
// namespace, and upstream's e2e suite ignores loopback for that reason.

import (
	"fmt"
	"strings"
)

// Reason says why a Decision came out as it did.
type Reason uint8

// Reasons.
const (
	NotAPod     Reason = iota // this side is not a pod: not judged
	NotIsolated               // no policy selects the pod for this direction
	FromOwnNode               // ingress from the pod's own node: always allowed
	AllowedBy                 // rules allow (Decision.Rules)
	DefaultDeny               // selected (Decision.Selected) and no rule allows
)

// RuleRef names one rule of a policy.
type RuleRef struct {
	Policy    string // namespace/name
	Direction Direction
	Index     int // in the policy's ingress or egress list
}

func (r RuleRef) String() string { return fmt.Sprintf("%s %s rule %d", r.Policy, r.Direction, r.Index) }

// Decision is one side's judgement.
type Decision struct {
	Direction Direction
	Allowed   bool
	Reason    Reason
	Selected  []string  // policies (namespace/name) that isolate the pod in this direction
	Rules     []RuleRef // the rules that allow, when Reason is AllowedBy
}

func (d Decision) String() string {
	verb := "denied"
	if d.Allowed {
		verb = "allowed"
	}
	var why string
	switch d.Reason {
	case NotAPod:
		why = "not a pod, not judged"
	case NotIsolated:
		why = "no policy selects the pod"
	case FromOwnNode:
		why = "from the pod's own node"
	case AllowedBy:
		rs := make([]string, len(d.Rules))
		for i, r := range d.Rules {
			rs[i] = fmt.Sprintf("%s rule %d", r.Policy, r.Index)
		}
		why = "by " + strings.Join(rs, ", ")
	case DefaultDeny:
		why = "default deny: selected by " + strings.Join(d.Selected, ", ") + ", no rule allows"
	}
	return fmt.Sprintf("%s %s: %s", d.Direction, verb, why)
}

// Verdict is the judgement of one connection attempt.
type Verdict struct {
	Egress  Decision // at the source
	Ingress Decision // at the destination
}

// Allowed reports whether both sides allow.
func (v Verdict) Allowed() bool { return v.Egress.Allowed && v.Ingress.Allowed }

func (v Verdict) String() string {
	verb := "denied"
	if v.Allowed() {
		verb = "allowed"
	}
	return fmt.Sprintf("%s (%v; %v)", verb, v.Egress, v.Ingress)
}

// Evaluate judges a connection attempt from src to dst, to port (ignored
// for protocols without ports) over proto.
func Evaluate(m *Model, src, dst Endpoint, port uint16, proto Protocol) Verdict {
	if !proto.hasPorts() {
		port = 0
	}
	return Verdict{
		Egress:  m.decide(Egress, src, dst, port, proto),
		Ingress: m.decide(Ingress, dst, src, port, proto),
	}
}

// decide judges direction d at endpoint self, the other end being peer.
func (m *Model) decide(d Direction, self, peer Endpoint, port uint16, proto Protocol) Decision {
	out := Decision{Direction: d, Allowed: true}
	if self.Pod == nil {
		out.Reason = NotAPod
		return out
	}
	if d == Ingress && peer.Pod == nil && peer.Node != "" && peer.Node == self.Pod.Node {
		out.Reason = FromOwnNode
		return out
	}
	sel := m.selecting(self.Pod, d)
	if len(sel) == 0 {
		out.Reason = NotIsolated
		return out
	}
	// The destination pod, on which named ports resolve.
	dstPod := self.Pod
	if d == Egress {
		dstPod = peer.Pod
	}
	for _, np := range sel {
		out.Selected = append(out.Selected, np.String())
		for i, r := range np.rules(d) {
			if m.ruleMatches(np, r, peer, dstPod, port, proto) {
				out.Rules = append(out.Rules, RuleRef{Policy: np.String(), Direction: d, Index: i})
			}
		}
	}
	if len(out.Rules) > 0 {
		out.Reason = AllowedBy
		return out
	}
	out.Allowed, out.Reason = false, DefaultDeny
	return out
}

func (m *Model) ruleMatches(np *NetworkPolicy, r Rule, peer Endpoint, dstPod *Pod, port uint16, proto Protocol) bool {
	if len(r.Ports) > 0 {
		ok := false
		for _, p := range r.Ports {
			if p.matches(dstPod, port, proto) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(r.Peers) == 0 {
		return true
	}
	for _, p := range r.Peers {
		if m.peerMatches(np, p, peer) {
			return true
		}
	}
	return false
}

// peerMatches reports whether e is one of the peers p of policy np.
func (m *Model) peerMatches(np *NetworkPolicy, p Peer, e Endpoint) bool {
	switch {
	case p.Invalid != nil:
		return false
	case p.Block != nil:
		return e.IP.IsValid() && p.Block.Contains(e.IP)
	case e.Pod == nil:
		return false
	}
	return m.selectsPod(np, p, e.Pod)
}

// selectsPod reports whether the selector peer p of policy np selects
// pod q.
func (m *Model) selectsPod(np *NetworkPolicy, p Peer, q *Pod) bool {
	if p.NamespaceSelector == nil {
		if q.Namespace != np.Namespace {
			return false
		}
	} else if !p.NamespaceSelector.Matches(m.namespaceLabels(q.Namespace)) {
		return false
	}
	return p.PodSelector == nil || p.PodSelector.Matches(q.Labels)
}

// matches reports whether traffic to port over proto matches p; named
// ports resolve on dst (nil: the destination is not a pod).
func (p Port) matches(dst *Pod, port uint16, proto Protocol) bool {
	if p.Invalid != nil || p.Protocol != proto {
		return false
	}
	switch {
	case p.Name != "":
		return dst != nil && dst.hasNamedPort(p.Name, proto, port)
	case p.Port == 0:
		return true
	case p.EndPort == 0:
		return port == p.Port
	}
	return p.Port <= port && port <= p.EndPort
}

func (q *Pod) hasNamedPort(name string, proto Protocol, port uint16) bool {
	for _, np := range q.Ports {
		if np.Name == name && np.Protocol == proto && np.Port == port {
			return true
		}
	}
	return false
}
