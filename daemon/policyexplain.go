package daemon

// `weft policy explain SRC DST PORT/PROTO`: the evaluator's verdict on one
// connection with the model this peer applied last, and the policies and
// rules that decide each side, each rule in words. The peer serves it
// because it holds the model; the evaluator is the same one the compiled
// program is property-tested against.

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/weftmesh/weft/api"
	"github.com/weftmesh/weft/api/client"
	"github.com/weftmesh/weft/policy"
)

// explain answers req with model m.
func explain(m *policy.Model, req client.ExplainRequest) (*client.Explanation, error) {
	src, err := resolveEndpoint(m, req.Src)
	if err != nil {
		return nil, err
	}
	dst, err := resolveEndpoint(m, req.Dst)
	if err != nil {
		return nil, err
	}
	proto, ok := policy.ParseProtocol(req.Protocol)
	if !ok {
		return nil, fmt.Errorf("%w: protocol %q: want TCP, UDP, SCTP or ICMP", api.ErrBadRequest, req.Protocol)
	}
	if req.Port < 0 || req.Port > 65535 {
		return nil, fmt.Errorf("%w: port %d: want 0 to 65535", api.ErrBadRequest, req.Port)
	}
	v := policy.Evaluate(m, src, dst, uint16(req.Port), proto)
	return &client.Explanation{
		Src: src.String(), SrcIP: addrText(src.IP), Dst: dst.String(), DstIP: addrText(dst.IP),
		Port: req.Port, Protocol: proto.String(), Allowed: v.Allowed(), Verdict: v.String(),
		Egress: decision(m, v.Egress), Ingress: decision(m, v.Ingress),
	}, nil
}

// resolveEndpoint reads "namespace/pod" or an address.
func resolveEndpoint(m *policy.Model, s string) (policy.Endpoint, error) {
	if ip, err := netip.ParseAddr(s); err == nil {
		return m.Endpoint(ip.Unmap()), nil
	}
	ns, name, ok := strings.Cut(s, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return policy.Endpoint{}, fmt.Errorf("%w: %q: want namespace/pod or an IP address", api.ErrBadRequest, s)
	}
	p, found := m.Pod(ns, name)
	if !found {
		return policy.Endpoint{}, fmt.Errorf("%w: pod %s/%s is not in this peer's model (hostNetwork and finished pods are not either)", api.ErrNotFound, ns, name)
	}
	return policy.PodEndpoint(p), nil
}

func addrText(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

var reasonNames = map[policy.Reason]string{
	policy.NotAPod:     "not-a-pod",
	policy.NotIsolated: "not-isolated",
	policy.FromOwnNode: "from-own-node",
	policy.AllowedBy:   "allowed-by",
	policy.DefaultDeny: "default-deny",
}

// decision turns one side's judgement into the API's form, each allowing
// rule in words.
func decision(m *policy.Model, d policy.Decision) client.PolicyDecision {
	out := client.PolicyDecision{Allowed: d.Allowed, Reason: reasonNames[d.Reason], Text: d.String(),
		Selected: append([]string{}, d.Selected...), Rules: []client.PolicyRule{}}
	for _, r := range d.Rules {
		out.Rules = append(out.Rules, client.PolicyRule{Policy: r.Policy, Direction: r.Direction.String(),
			Index: r.Index, Text: ruleText(m, r)})
	}
	return out
}

// ruleText is rule r in words, e.g. "from pods pod=b in namespaces ns=y;
// on TCP/80".
func ruleText(m *policy.Model, r policy.RuleRef) string {
	for _, np := range m.Policies() {
		if np.String() != r.Policy {
			continue
		}
		rules := np.Ingress
		word := "from"
		if r.Direction == policy.Egress {
			rules, word = np.Egress, "to"
		}
		if r.Index < 0 || r.Index >= len(rules) {
			break
		}
		return describeRule(np.Namespace, word, rules[r.Index])
	}
	return "(the rule is no longer in the model)"
}

func describeRule(ns, word string, r policy.Rule) string {
	peers := "anyone"
	if len(r.Peers) > 0 {
		ps := make([]string, len(r.Peers))
		for i, p := range r.Peers {
			ps[i] = describePeer(ns, p)
		}
		peers = strings.Join(ps, " or ")
	}
	ports := "any port and protocol"
	if len(r.Ports) > 0 {
		ps := make([]string, len(r.Ports))
		for i, p := range r.Ports {
			ps[i] = p.String()
			if p.Invalid != nil {
				ps[i] += " (never matches: " + p.Invalid.Error() + ")"
			}
		}
		ports = strings.Join(ps, ", ")
	}
	return word + " " + peers + "; on " + ports
}

func describePeer(ns string, p policy.Peer) string {
	switch {
	case p.Invalid != nil:
		return "(a peer that never matches: " + p.Invalid.Error() + ")"
	case p.Block != nil:
		s := "ipBlock " + p.Block.CIDR.String()
		if len(p.Block.Except) > 0 {
			ex := make([]string, len(p.Block.Except))
			for i, e := range p.Block.Except {
				ex[i] = e.String()
			}
			s += " except " + strings.Join(ex, ", ")
		}
		return s
	}
	pods := "all pods"
	if p.PodSelector != nil {
		pods = "pods " + p.PodSelector.String()
	}
	if p.NamespaceSelector == nil {
		return pods + " in namespace " + ns
	}
	return pods + " in namespaces " + p.NamespaceSelector.String()
}
