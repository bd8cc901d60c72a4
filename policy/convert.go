package policy

// Conversion from the API's networking.k8s.io/v1 NetworkPolicy into
// weft's validated form, once per object version.
//
// The API server has validated and defaulted what an informer delivers,
// but Convert trusts nothing: it never panics, and it keeps every part it
// understands. What it cannot express or understand becomes a part that
// never matches, and a Problem that says so (wrapping ErrUnsupported or
// ErrInvalid). That is never a silent half-application: a policy still
// isolates every pod it selects, so a broken allow rule fails closed, and
// the caller reports the problem (status, logs). Only a policy whose
// podSelector cannot be understood is refused as a whole (nil and an
// error): nobody can know which pods it isolates.
//
// Defaults applied here as the API server would: policyTypes empty means
// Ingress, plus Egress when there are egress rules; a port's protocol
// defaults to TCP.

import (
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Direction is the side of a pod a rule judges.
type Direction uint8

// The two directions.
const (
	Ingress Direction = iota // traffic to the selected pod
	Egress                   // traffic from the selected pod
)

func (d Direction) String() string {
	if d == Egress {
		return "egress"
	}
	return "ingress"
}

// NetworkPolicy is a converted networking.k8s.io/v1 NetworkPolicy.
type NetworkPolicy struct {
	Namespace, Name string
	PodSelector     Selector // the pods it applies to, in Namespace
	IsolateIngress  bool     // policyTypes has Ingress
	IsolateEgress   bool     // policyTypes has Egress
	Ingress         []Rule   // allow rules; empty when !IsolateIngress
	Egress          []Rule   // allow rules; empty when !IsolateEgress
	// Problems are the parts that never match, each naming where it is
	// and wrapping ErrUnsupported or ErrInvalid.
	Problems []error
}

func (np *NetworkPolicy) String() string { return np.Namespace + "/" + np.Name }

func (np *NetworkPolicy) affects(d Direction) bool {
	if d == Egress {
		return np.IsolateEgress
	}
	return np.IsolateIngress
}

func (np *NetworkPolicy) rules(d Direction) []Rule {
	if d == Egress {
		return np.Egress
	}
	return np.Ingress
}

// Rule is one ingress or egress rule: traffic matching one of Peers and
// one of Ports is allowed.
type Rule struct {
	Peers []Peer // empty: every source (ingress) or destination (egress)
	Ports []Port // empty: every port of every protocol
}

// Peer is one item of a rule's from or to list: either pods by selectors
// or an IP block.
type Peer struct {
	// PodSelector selects pods; nil: every pod of the selected namespaces.
	PodSelector *Selector
	// NamespaceSelector selects namespaces; nil: the policy's own.
	NamespaceSelector *Selector
	// Block, when set, makes this an ipBlock peer (selectors unset).
	Block *Block
	// Invalid, when set, says why this peer never matches.
	Invalid error
}

// Block is an ipBlock: CIDR minus the Except prefixes. Only IPv4 prefixes
// can ever match: the pod network is IPv4.
type Block struct {
	CIDR   netip.Prefix
	Except []netip.Prefix
}

// Contains reports whether ip is in the block.
func (b *Block) Contains(ip netip.Addr) bool {
	if !b.CIDR.Contains(ip) {
		return false
	}
	for _, e := range b.Except {
		if e.Contains(ip) {
			return false
		}
	}
	return true
}

// Port is one item of a rule's ports list.
type Port struct {
	Protocol Protocol
	Port     uint16 // 0: every port (unless Name is set)
	EndPort  uint16 // 0: Port alone; else the inclusive range Port..EndPort
	Name     string // a named port, resolved on the destination pod
	// Invalid, when set, says why this port never matches.
	Invalid error
}

func (p Port) String() string {
	switch {
	case p.Name != "":
		return p.Protocol.String() + "/" + p.Name
	case p.Port == 0:
		return p.Protocol.String()
	case p.EndPort != 0:
		return fmt.Sprintf("%v/%d-%d", p.Protocol, p.Port, p.EndPort)
	}
	return fmt.Sprintf("%v/%d", p.Protocol, p.Port)
}

// Selector is a validated label selector.
type Selector struct {
	sel  labels.Selector
	text string
}

// Matches reports whether the selector selects labels l.
func (s Selector) Matches(l map[string]string) bool {
	return s.sel != nil && s.sel.Matches(labels.Set(l))
}

// String is the selector in kubectl's syntax; "{}" selects everything.
func (s Selector) String() string {
	if s.text == "" {
		return "{}"
	}
	return s.text
}

// NewSelector validates and converts ls (nil is not allowed: the caller
// decides what an absent selector means).
func NewSelector(ls *metav1.LabelSelector) (Selector, error) {
	sel, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		return Selector{}, err
	}
	return Selector{sel: sel, text: sel.String()}, nil
}

// Convert turns np into weft's form. The error, when not nil, lists what
// never matches (errors.Is ErrUnsupported or ErrInvalid) and is also in
// the result's Problems; only a policy that cannot be understood at all
// returns nil.
func Convert(np *networkingv1.NetworkPolicy, caps Capabilities) (*NetworkPolicy, error) {
	if np == nil {
		return nil, fmt.Errorf("networkpolicy: %w: nil", ErrInvalid)
	}
	id := np.Namespace + "/" + np.Name
	ps, err := NewSelector(&np.Spec.PodSelector)
	if err != nil {
		return nil, fmt.Errorf("networkpolicy %s: podSelector: %w: %v", id, ErrInvalid, err)
	}
	out := &NetworkPolicy{Namespace: np.Namespace, Name: np.Name, PodSelector: ps}
	if len(np.Spec.PolicyTypes) == 0 {
		out.IsolateIngress = true
		out.IsolateEgress = len(np.Spec.Egress) > 0
	}
	for _, t := range np.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			out.IsolateIngress = true
		case networkingv1.PolicyTypeEgress:
			out.IsolateEgress = true
		default:
			out.Problems = append(out.Problems, fmt.Errorf("policyTypes: %w: unknown type %q ignored", ErrInvalid, t))
		}
	}
	if out.IsolateIngress {
		for i, r := range np.Spec.Ingress {
			out.Ingress = append(out.Ingress, out.convertRule(fmt.Sprintf("ingress rule %d", i), r.From, r.Ports, caps))
		}
	}
	if out.IsolateEgress {
		for i, r := range np.Spec.Egress {
			out.Egress = append(out.Egress, out.convertRule(fmt.Sprintf("egress rule %d", i), r.To, r.Ports, caps))
		}
	}
	if len(out.Problems) > 0 {
		return out, fmt.Errorf("networkpolicy %s: %w", id, problemList(out.Problems))
	}
	return out, nil
}

// problemList is errors.Join on one line.
type problemList []error

func (l problemList) Error() string {
	s := make([]string, len(l))
	for i, e := range l {
		s[i] = e.Error()
	}
	return strings.Join(s, "; ")
}

func (l problemList) Unwrap() []error { return l }

func (np *NetworkPolicy) convertRule(where string, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort, caps Capabilities) Rule {
	var r Rule
	for i, p := range peers {
		pe := convertPeer(p)
		if pe.Invalid != nil {
			np.Problems = append(np.Problems, fmt.Errorf("%s peer %d: %w", where, i, pe.Invalid))
		}
		r.Peers = append(r.Peers, pe)
	}
	for i, p := range ports {
		po := convertPort(p, caps)
		if po.Invalid != nil {
			np.Problems = append(np.Problems, fmt.Errorf("%s port %d: %w", where, i, po.Invalid))
		}
		r.Ports = append(r.Ports, po)
	}
	return r
}

func convertPeer(p networkingv1.NetworkPolicyPeer) Peer {
	if p.IPBlock != nil {
		if p.PodSelector != nil || p.NamespaceSelector != nil {
			return Peer{Invalid: fmt.Errorf("%w: ipBlock together with a selector", ErrInvalid)}
		}
		cidr, err := netip.ParsePrefix(p.IPBlock.CIDR)
		if err != nil {
			return Peer{Invalid: fmt.Errorf("ipBlock cidr %q: %w: %v", p.IPBlock.CIDR, ErrInvalid, err)}
		}
		b := &Block{CIDR: cidr.Masked()}
		for _, e := range p.IPBlock.Except {
			ex, err := netip.ParsePrefix(e)
			if err != nil {
				return Peer{Invalid: fmt.Errorf("ipBlock except %q: %w: %v", e, ErrInvalid, err)}
			}
			b.Except = append(b.Except, ex.Masked())
		}
		return Peer{Block: b}
	}
	if p.PodSelector == nil && p.NamespaceSelector == nil {
		return Peer{Invalid: fmt.Errorf("%w: empty peer (no podSelector, namespaceSelector or ipBlock)", ErrInvalid)}
	}
	var out Peer
	if p.PodSelector != nil {
		s, err := NewSelector(p.PodSelector)
		if err != nil {
			return Peer{Invalid: fmt.Errorf("podSelector: %w: %v", ErrInvalid, err)}
		}
		out.PodSelector = &s
	}
	if p.NamespaceSelector != nil {
		s, err := NewSelector(p.NamespaceSelector)
		if err != nil {
			return Peer{Invalid: fmt.Errorf("namespaceSelector: %w: %v", ErrInvalid, err)}
		}
		out.NamespaceSelector = &s
	}
	return out
}

func convertPort(p networkingv1.NetworkPolicyPort, caps Capabilities) Port {
	out := Port{Protocol: TCP}
	if p.Protocol != nil {
		switch *p.Protocol {
		case corev1.ProtocolTCP:
		case corev1.ProtocolUDP:
			out.Protocol = UDP
		case corev1.ProtocolSCTP:
			out.Protocol = SCTP
			if !caps.SCTP {
				out.Invalid = fmt.Errorf("protocol SCTP: %w: this kernel has no SCTP, so the port never matches (the policy still isolates its pods)", ErrUnsupported)
			}
		default:
			out.Invalid = fmt.Errorf("protocol %q: %w", *p.Protocol, ErrInvalid)
			return out
		}
	}
	if p.Port != nil {
		switch p.Port.Type {
		case intstr.Int:
			if p.Port.IntVal < 1 || p.Port.IntVal > 65535 {
				out.Invalid = fmt.Errorf("port %d: %w: out of 1-65535", p.Port.IntVal, ErrInvalid)
				return out
			}
			out.Port = uint16(p.Port.IntVal)
		case intstr.String:
			if !validPortName(p.Port.StrVal) {
				out.Invalid = fmt.Errorf("port name %q: %w: not an IANA service name", p.Port.StrVal, ErrInvalid)
				return out
			}
			out.Name = p.Port.StrVal
		default:
			out.Invalid = fmt.Errorf("port: %w: neither number nor name", ErrInvalid)
			return out
		}
	}
	if p.EndPort != nil {
		switch {
		case out.Name != "" || out.Port == 0:
			out.Invalid = fmt.Errorf("endPort %d: %w: needs a numeric port", *p.EndPort, ErrInvalid)
		case *p.EndPort < int32(out.Port) || *p.EndPort > 65535:
			out.Invalid = fmt.Errorf("endPort %d: %w: not in %d-65535", *p.EndPort, ErrInvalid, out.Port)
		case *p.EndPort > int32(out.Port):
			out.EndPort = uint16(*p.EndPort)
		}
	}
	return out
}

// validPortName is the API's IANA_SVC_NAME rule: 1-15 lowercase letters,
// digits and inner single hyphens, at least one letter.
func validPortName(s string) bool {
	if len(s) == 0 || len(s) > 15 || s[0] == '-' || s[len(s)-1] == '-' || strings.Contains(s, "--") {
		return false
	}
	letter := false
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z':
			letter = true
		case c >= '0' && c <= '9', c == '-':
		default:
			return false
		}
	}
	return letter
}
