package policy

// The model: what the evaluator and the compiler see of a cluster.
//
// A Snapshot is plain data handed over whole (desired state, not events):
// the namespaces with their labels, the pods with their labels, address,
// node and named container ports, the NetworkPolicies already converted
// (Convert), and the nodes with their own addresses. NewModel indexes it
// once; a Model never changes afterwards, so the evaluator and the
// compiler may share it between goroutines.
//
// What the model does with imperfect input, rather than refusing it:
//   - A pod whose namespace is not listed (the namespace informer lags the
//     pod informer) lives in a namespace with only the label
//     kubernetes.io/metadata.name, which the API server puts on every
//     namespace; a listed namespace without that label gets it too.
//   - A pod without an address is kept (its labels still decide what
//     selects it) but matches no peer and is never programmed.
//   - Two pods with the same address: the first by namespace/name keeps
//     the address, the other is kept without it, and Problems says so;
//     the kubelet reuses addresses of finished pods, which the caller must
//     leave out of the snapshot.

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Protocol is an IP protocol number (the IANA assignment, as in the IPv4
// header): what traffic carries, and what a NetworkPolicy port names.
type Protocol uint8

// The protocols NetworkPolicy ports name, and ICMP, which only a rule
// without ports allows.
const (
	ICMP Protocol = 1
	TCP  Protocol = 6
	UDP  Protocol = 17
	SCTP Protocol = 132
)

// String returns the Kubernetes spelling (TCP, UDP, SCTP), "ICMP", or the
// number.
func (p Protocol) String() string {
	switch p {
	case ICMP:
		return "ICMP"
	case TCP:
		return "TCP"
	case UDP:
		return "UDP"
	case SCTP:
		return "SCTP"
	}
	return strconv.Itoa(int(p))
}

// ParseProtocol reads what String writes, in any case; "" is TCP, the
// Kubernetes default. ok is false for anything else.
func ParseProtocol(s string) (p Protocol, ok bool) {
	switch strings.ToUpper(s) {
	case "", "TCP":
		return TCP, true
	case "UDP":
		return UDP, true
	case "SCTP":
		return SCTP, true
	case "ICMP":
		return ICMP, true
	}
	return 0, false
}

// hasPorts reports whether the protocol carries ports in the first four
// bytes of its header (what a NetworkPolicy port matches on).
func (p Protocol) hasPorts() bool { return p == TCP || p == UDP || p == SCTP }

// nftName is the protocol's name in nft syntax.
func (p Protocol) nftName() string {
	switch p {
	case ICMP:
		return "icmp"
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	case SCTP:
		return "sctp"
	}
	return strconv.Itoa(int(p))
}

// NamespaceNameLabel is the label the API server puts on every namespace,
// its name as value.
const NamespaceNameLabel = "kubernetes.io/metadata.name"

// Namespace is a namespace's name and labels.
type Namespace struct {
	Name   string
	Labels map[string]string
}

// Pod is what policy sees of a pod.
type Pod struct {
	Namespace string
	Name      string
	Labels    map[string]string
	IP        netip.Addr  // IPv4; invalid = no address yet
	Node      string      // the node it runs on (spec.nodeName)
	Ports     []NamedPort // named container ports of all its containers
}

// NamedPort is one named container port. A pod may carry the same name
// twice (in two containers, or for two protocols); a policy's named port
// matches any of them with the traffic's protocol and port.
type NamedPort struct {
	Name     string
	Port     uint16
	Protocol Protocol
}

// Node is a node and its own addresses (the host network namespace's:
// InternalIP, the bridge address, the node-local DNS address, ...).
// Traffic from them to the node's pods is always allowed (kubelet probes).
type Node struct {
	Name  string
	Addrs []netip.Addr
}

// Capabilities are what the kernel can do that policies may ask for.
type Capabilities struct {
	SCTP bool // the kernel has SCTP: policy ports with protocol SCTP can match
}

// Snapshot is the cluster as policy needs it.
type Snapshot struct {
	Namespaces []Namespace
	Pods       []Pod
	Policies   []*NetworkPolicy // from Convert; nil entries are skipped
	Nodes      []Node
}

// Model is an indexed, immutable Snapshot. The pods and policies its
// methods return are its own: read them, never change them.
type Model struct {
	namespaces map[string]*Namespace
	pods       []*Pod            // sorted by namespace, name
	podsByNS   map[string][]*Pod // sorted by name
	podByIP    map[netip.Addr]*Pod
	byIP       []*Pod           // the pods with an address, sorted by it
	rank       map[*Pod]int     // a pod's index in byIP
	policies   []*NetworkPolicy // sorted by namespace, name
	polByNS    map[string][]*NetworkPolicy
	nodes      map[string]*Node
	nodeByAddr map[netip.Addr]string
	problems   []error
}

// Sentinel errors, for errors.Is on Problems and Convert's error.
var (
	// ErrUnsupported marks what the API accepts but weft cannot express
	// (SCTP without kernel support): the part never matches.
	ErrUnsupported = errors.New("not supported by weft")
	// ErrInvalid marks what the API would have refused: the part never
	// matches, or Convert returns no policy when nothing can be understood.
	ErrInvalid = errors.New("invalid")
	// ErrConflict marks model input that contradicts itself (two pods with
	// one address).
	ErrConflict = errors.New("conflict")
)

// NewModel indexes s. Problems reports what it had to leave out.
func NewModel(s Snapshot) *Model {
	m := &Model{
		namespaces: map[string]*Namespace{},
		podsByNS:   map[string][]*Pod{},
		podByIP:    map[netip.Addr]*Pod{},
		rank:       map[*Pod]int{},
		polByNS:    map[string][]*NetworkPolicy{},
		nodes:      map[string]*Node{},
		nodeByAddr: map[netip.Addr]string{},
	}
	for _, ns := range s.Namespaces {
		m.addNamespace(ns.Name, ns.Labels)
	}
	pods := make([]*Pod, len(s.Pods))
	for i := range s.Pods {
		p := s.Pods[i]
		pods[i] = &p
	}
	slices.SortFunc(pods, func(a, b *Pod) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	for _, p := range pods {
		if _, ok := m.namespaces[p.Namespace]; !ok {
			m.addNamespace(p.Namespace, nil)
		}
		if p.IP.IsValid() {
			if !p.IP.Is4() {
				m.problems = append(m.problems, fmt.Errorf("pod %s/%s: address %v: %w: the pod network is IPv4", p.Namespace, p.Name, p.IP, ErrUnsupported))
				p.IP = netip.Addr{}
			} else if q, dup := m.podByIP[p.IP]; dup {
				m.problems = append(m.problems, fmt.Errorf("pod %s/%s: address %v is also pod %s/%s's: %w; ignoring its address", p.Namespace, p.Name, p.IP, q.Namespace, q.Name, ErrConflict))
				p.IP = netip.Addr{}
			} else {
				m.podByIP[p.IP] = p
			}
		}
		m.pods = append(m.pods, p)
		m.podsByNS[p.Namespace] = append(m.podsByNS[p.Namespace], p)
	}
	for _, p := range m.pods {
		if p.IP.IsValid() {
			m.byIP = append(m.byIP, p)
		}
	}
	slices.SortFunc(m.byIP, func(a, b *Pod) int { return a.IP.Compare(b.IP) })
	for i, p := range m.byIP {
		m.rank[p] = i
	}
	for _, np := range s.Policies {
		if np == nil {
			continue
		}
		m.policies = append(m.policies, np)
		for _, e := range np.Problems {
			m.problems = append(m.problems, fmt.Errorf("networkpolicy %s/%s: %w", np.Namespace, np.Name, e))
		}
	}
	slices.SortFunc(m.policies, func(a, b *NetworkPolicy) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	for _, np := range m.policies {
		m.polByNS[np.Namespace] = append(m.polByNS[np.Namespace], np)
	}
	for _, n := range s.Nodes {
		n.Addrs = slices.Clone(n.Addrs)
		m.nodes[n.Name] = &n
		for _, a := range n.Addrs {
			m.nodeByAddr[a] = n.Name
		}
	}
	return m
}

func (m *Model) addNamespace(name string, labels map[string]string) {
	l := maps.Clone(labels)
	if l == nil {
		l = map[string]string{}
	}
	if _, ok := l[NamespaceNameLabel]; !ok {
		l[NamespaceNameLabel] = name
	}
	m.namespaces[name] = &Namespace{Name: name, Labels: l}
}

// Problems returns what NewModel left out and what the policies cannot
// express, each naming its object.
func (m *Model) Problems() []error { return slices.Clone(m.problems) }

// Pods returns every pod, sorted by namespace and name.
func (m *Model) Pods() []*Pod { return slices.Clone(m.pods) }

// Pod returns the pod namespace/name.
func (m *Model) Pod(namespace, name string) (*Pod, bool) {
	for _, p := range m.podsByNS[namespace] {
		if p.Name == name {
			return p, true
		}
	}
	return nil, false
}

// Policies returns every policy, sorted by namespace and name.
func (m *Model) Policies() []*NetworkPolicy { return slices.Clone(m.policies) }

// Node returns the node called name.
func (m *Model) Node(name string) (Node, bool) {
	n, ok := m.nodes[name]
	if !ok {
		return Node{}, false
	}
	return Node{Name: n.Name, Addrs: slices.Clone(n.Addrs)}, true
}

// Endpoint is one end of a connection: a pod, a node (its host network
// namespace), or any other address.
type Endpoint struct {
	Pod  *Pod       // the pod; nil for a node or a bare address
	IP   netip.Addr // the address the traffic carries
	Node string     // for a node's own address: the node; "" otherwise
}

// PodEndpoint is the pod p at its address.
func PodEndpoint(p *Pod) Endpoint { return Endpoint{Pod: p, IP: p.IP} }

// Endpoint returns what ip is in the model: a pod, a node's own address,
// or a bare address.
func (m *Model) Endpoint(ip netip.Addr) Endpoint {
	if p, ok := m.podByIP[ip]; ok {
		return Endpoint{Pod: p, IP: ip}
	}
	return Endpoint{IP: ip, Node: m.nodeByAddr[ip]}
}

func (e Endpoint) String() string {
	switch {
	case e.Pod != nil:
		return e.Pod.Namespace + "/" + e.Pod.Name
	case e.Node != "":
		return "node " + e.Node + " (" + e.IP.String() + ")"
	}
	return e.IP.String()
}

// namespaceLabels returns the labels of namespace ns.
func (m *Model) namespaceLabels(ns string) map[string]string {
	if n, ok := m.namespaces[ns]; ok {
		return n.Labels
	}
	return map[string]string{NamespaceNameLabel: ns}
}

// Selecting returns the policies that isolate pod p in direction d (of
// its namespace, podSelector matching, policyTypes including d), sorted
// by name.
func (m *Model) Selecting(p *Pod, d Direction) []*NetworkPolicy { return m.selecting(p, d) }

// Isolated counts the pods of node that some policy isolates in either
// direction (what status reports).
func (m *Model) Isolated(node string) int {
	n := 0
	for _, p := range m.pods {
		if p.Node == node && (len(m.selecting(p, Ingress)) > 0 || len(m.selecting(p, Egress)) > 0) {
			n++
		}
	}
	return n
}

// selecting returns the policies of pod p's namespace that select it for
// direction d, in order.
func (m *Model) selecting(p *Pod, d Direction) []*NetworkPolicy {
	var out []*NetworkPolicy
	for _, np := range m.polByNS[p.Namespace] {
		if np.affects(d) && np.PodSelector.Matches(p.Labels) {
			out = append(out, np)
		}
	}
	return out
}
