package policy

// The compiler: the model, for the pods of one node, as an nftables
// program. It states the evaluator's semantics a second way; the property
// test holds the two equal on every packet.
//
//	table ip weft-policy {
//	  map ingress { type ipv4_addr : verdict; elements = { 10.32.0.5 : jump ingress-10.32.0.5 } }
//	  map egress  { ... the local pods isolated for egress ... }
//	  set pods-82dedc9ba628ed5a { type ipv4_addr; comment "pods pod=b in namespace x"; ... }
//	  set cidrs-b080e1769f988db3 { type ipv4_addr; flags interval; comment "192.168.0.0/16 except 192.168.1.0/24"; ... }
//	  set named-6b7d64c58d8f6bd5 { type ipv4_addr . inet_service; comment "TCP/http of all pods in namespaces ns=y"; ... }
//	  chain forward { type filter hook forward priority filter; policy accept;
//	    iifname "wf*" fib saddr . iif oif missing counter drop
//	    ct state established,related accept
//	    ip saddr vmap @egress
//	    ip daddr vmap @ingress
//	  }
//	  chain input { type filter hook input priority filter; policy accept;
//	    iifname "wf*" fib saddr . iif oif missing counter drop
//	    ct state established,related accept
//	    ip saddr vmap @egress
//	  }
//	  chain ingress-10.32.0.5 {
//	    meta l4proto tcp th dport 80 ip saddr @pods-82dedc9ba628ed5a accept comment "x/web ingress rule 0"
//	    limit rate 10/second burst 20 packets log prefix "weft-policy deny ingress x/a" group 6784
//	    counter drop
//	  }
//	}
//
// A rule's selector peers become a set of pod addresses (cluster-wide),
// its ipBlocks an interval set with the excepts cut out, and an egress
// named port a set of (pod address, number) pairs resolved on each
// destination pod; ports are matched in the rule itself (an ingress named
// port resolved on the chain's pod).
//
// Where packets are judged. Pods are routed: each has a host veth and a
// /32 route, and the host forwards between pods, tunnels and the world,
// so the forward hook sees every packet of a pod of this node except
// those to the node itself, which go to input. Egress of a local pod is
// judged in both (forward and input: upstream kube-network-policies
// judges pod-to-node traffic as egress since its "implement egress
// policies from Pod to Node" change, and so does weft: the node is a
// bare address, allowed by an ipBlock or a rule without peers). Ingress
// is judged in forward only: what the node itself sends to its pods goes
// through output, which has no chain here, and that is how "traffic from
// the pod's own node is always allowed" holds; kube-proxy's DNAT of
// Service traffic happens in prerouting, before forward, so the real
// backend is judged. Replies and packets of accepted connections pass on
// the conntrack rule; a policy change that denies an established
// connection needs its conntrack entries deleted (not done here).
//
// Pods are known by their addresses (the verdict maps, the sets), so a
// pod that forged its source address would be judged as the address it
// forged. The forward and input chains therefore begin with a strict
// reverse-path check on pods' host veths (Config.PodIfPrefix): a packet
// from a pod's veth whose source address is not routed back out of that
// veth is dropped. Each pod's /32 route makes that exact: a pod can only
// send as itself. The rp_filter sysctl cannot do it: the kernel applies
// the larger of the device's and "all"'s value, and distributions set
// "all" to loose (2), which accepts any routable source. The check comes
// before the conntrack rule, so a forged packet cannot ride another
// pod's established connection either.
//
// Egress chains end their allow rules in return, not accept, so that the
// forward chain goes on to judge the destination's ingress when both pods
// live on this node; ingress chains accept. Every isolated pod's chain
// ends with a rate-limited NFLOG of the dropped packet (prefix
// "weft-policy deny <direction> <namespace>/<pod>") and a counted drop.
// Drop, not reject: that is what upstream implementations do, it tells a
// scanner nothing, and a client sees a timeout.
//
// Incremental updates. Chains are per isolated local pod, named by its
// address and keyed by address in the verdict maps; sets are named after
// what defines them (see setName) and shared by every rule that says the
// same. So one pod's label change rewrites at most its own chains and
// moves its address in or out of the sets whose definition it meets;
// policy/nft applies exactly that difference.

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Config are the compiler's choices.
type Config struct {
	Table    string // nftables table (family ip)
	LogGroup uint16 // NFLOG group of logged drops
	LogRate  uint32 // logged drops per second per pod chain; 0 = no NFLOG
	LogBurst uint32 // packets logged in a burst above LogRate
	// PodIfPrefix starts the name of every pod's host veth (weft-cni's
	// are "wf" + a hash). A packet that comes in on such a device with a
	// source address whose route does not lead back out of it is a
	// forged one and is dropped, before any other rule. "" = no such
	// rule.
	PodIfPrefix string
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Table:    "weft-policy",
		LogGroup: 6784, // weft's API port: unlikely to be another NFLOG user's group
		LogRate:  10,
		LogBurst: 20,
		// weft-cni's hostVethName
		PodIfPrefix: "wf",
	}
}

// Validate checks c.
func (c Config) Validate() error {
	switch {
	case c.Table == "" || len(c.Table) > 64:
		return fmt.Errorf("%w config: table %q: 1-64 bytes", ErrInvalid, c.Table)
	case c.LogRate > 0 && c.LogBurst == 0:
		return fmt.Errorf("%w config: log burst 0 with log rate %d", ErrInvalid, c.LogRate)
	case len(c.PodIfPrefix) > 14 || strings.ContainsAny(c.PodIfPrefix, "*\\\x00"):
		return fmt.Errorf("%w config: pod interface prefix %q: at most 14 bytes, no wildcard", ErrInvalid, c.PodIfPrefix)
	}
	return nil
}

// Names of the fixed parts of the table.
const (
	ChainForward = "forward"
	ChainInput   = "input"
	MapIngress   = "ingress"
	MapEgress    = "egress"
)

// PodChain is the name of the chain judging direction d of the local pod
// at ip.
func PodChain(d Direction, ip netip.Addr) string { return d.String() + "-" + ip.String() }

// logPrefix begins every NFLOG prefix of a dropped packet.
const logPrefix = "weft-policy deny "

// LogPrefix is the NFLOG prefix of packets dropped by pod p's default
// deny in direction d; ParseLogPrefix reads it back.
func LogPrefix(d Direction, p *Pod) string {
	s := logPrefix + d.String() + " " + p.Namespace + "/" + p.Name
	if len(s) > 127 { // NF_LOG_PREFIXLEN with the NUL
		s = s[:127]
	}
	return s
}

// ParseLogPrefix reads a LogPrefix: the direction ("ingress" or
// "egress") and "namespace/pod". ok is false for any other prefix.
func ParseLogPrefix(s string) (direction, pod string, ok bool) {
	rest, found := strings.CutPrefix(s, logPrefix)
	if !found {
		return "", "", false
	}
	direction, pod, found = strings.Cut(rest, " ")
	if !found || (direction != Ingress.String() && direction != Egress.String()) || !strings.Contains(pod, "/") {
		return "", "", false
	}
	return direction, pod, true
}

// Compile compiles m for node with DefaultConfig.
func Compile(m *Model, node string) (*Program, error) { return DefaultConfig().Compile(m, node) }

// Compile compiles m for the pods of node.
func (c Config) Compile(m *Model, node string) (*Program, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if node == "" {
		return nil, errors.New("compile: no node name")
	}
	b := &builder{m: m, cfg: c, sets: map[string]*Set{}, names: map[setUse]string{}}
	p := &Program{Table: c.Table}
	if n, ok := m.nodes[node]; ok {
		p.Local = slices.Clone(n.Addrs)
		slices.SortFunc(p.Local, netip.Addr.Compare)
		p.Local = slices.Compact(p.Local)
	}
	var local []*Pod
	for _, q := range m.pods {
		if q.Node == node && q.IP.IsValid() {
			local = append(local, q)
		}
	}
	slices.SortFunc(local, func(a, b *Pod) int { return a.IP.Compare(b.IP) })

	ingress := &Set{Name: MapIngress, Kind: VerdictMap}
	egress := &Set{Name: MapEgress, Kind: VerdictMap}
	var podChains []*Chain
	for _, q := range local {
		for _, d := range []Direction{Ingress, Egress} {
			sel := m.selecting(q, d)
			if len(sel) == 0 {
				continue
			}
			ch := b.podChain(q, d, sel)
			podChains = append(podChains, ch)
			vm := ingress
			if d == Egress {
				vm = egress
			}
			vm.Elems = append(vm.Elems, Elem{Addr: q.IP, Chain: ch.Name})
		}
	}
	slices.SortFunc(podChains, func(a, b *Chain) int { return cmp.Compare(a.Name, b.Name) })

	var pre []ChainRule
	if c.PodIfPrefix != "" {
		pre = append(pre, ChainRule{Match: []Match{{Kind: MatchSpoofed, Prefix: c.PodIfPrefix}}, Counter: true, Action: Action{Kind: Drop}})
	}
	pre = append(pre,
		ChainRule{Match: []Match{{Kind: MatchEstablished}}, Action: Action{Kind: Accept}},
		ChainRule{Action: Action{Kind: Dispatch, Map: MapEgress, Field: Saddr}})
	p.Chains = append(p.Chains,
		&Chain{Name: ChainForward, Hook: HookForward, Rules: append(slices.Clone(pre),
			ChainRule{Action: Action{Kind: Dispatch, Map: MapIngress, Field: Daddr}})},
		&Chain{Name: ChainInput, Hook: HookInput, Rules: slices.Clone(pre)},
	)
	p.Chains = append(p.Chains, podChains...)
	p.Sets = append(p.Sets, ingress, egress)
	for _, s := range b.sets {
		p.Sets = append(p.Sets, s)
	}
	slices.SortFunc(p.Sets, func(a, b *Set) int { return cmp.Compare(a.Name, b.Name) })
	return p, nil
}

// builder holds one compilation's sets, made once per policy rule however
// many local pods the policy selects.
type builder struct {
	m     *Model
	cfg   Config
	sets  map[string]*Set
	names map[setUse]string // the set each use resolved to: a policy's rules recur in every pod it selects
}

// setUse is one use of a set: which rule of which policy, and what of it
// (port is -1 for the peers, else the named port's index).
type setUse struct {
	np     *NetworkPolicy
	d      Direction
	i      int
	blocks bool
	port   int
}

// set returns the name of the set of use u, made by mk on first use.
func (b *builder) set(u setUse, mk func() string) string {
	if name, ok := b.names[u]; ok {
		return name
	}
	name := mk()
	b.names[u] = name
	return name
}

// podChain is the chain judging direction d of local pod q, which the
// policies sel select.
func (b *builder) podChain(q *Pod, d Direction, sel []*NetworkPolicy) *Chain {
	ch := &Chain{Name: PodChain(d, q.IP)}
	for _, np := range sel {
		for i, r := range np.rules(d) {
			ch.Rules = append(ch.Rules, b.ruleRules(q, np, d, i, r)...)
		}
	}
	if b.cfg.LogRate > 0 {
		ch.Rules = append(ch.Rules, ChainRule{Log: &Log{Prefix: LogPrefix(d, q), Group: b.cfg.LogGroup,
			Rate: b.cfg.LogRate, Burst: b.cfg.LogBurst}})
	}
	ch.Rules = append(ch.Rules, ChainRule{Counter: true, Action: Action{Kind: Drop}})
	return ch
}

// ruleRules are the nft rules of rule i of np in direction d, in the
// chain of local pod q: one per (peer kind, port) pair.
func (b *builder) ruleRules(q *Pod, np *NetworkPolicy, d Direction, i int, r Rule) []ChainRule {
	allow, field := Action{Kind: Accept}, Saddr
	if d == Egress {
		allow, field = Action{Kind: Return}, Daddr
	}
	comment := RuleRef{Policy: np.String(), Direction: d, Index: i}.String()
	// Alternatives for the peer: none listed (match any), selector
	// peers (a set of pod addresses), ipBlocks (a set of ranges); made
	// when a port needs them (an egress named port does not).
	var addrs [][]Match
	made := false
	peerSets := func() [][]Match {
		if len(r.Peers) == 0 {
			return [][]Match{nil}
		}
		if made {
			return addrs
		}
		made = true
		var selectors, blocks bool
		for _, p := range r.Peers {
			selectors = selectors || (p.Invalid == nil && p.Block == nil)
			blocks = blocks || (p.Invalid == nil && p.Block != nil)
		}
		if selectors {
			addrs = append(addrs, []Match{{Kind: MatchAddrIn, Field: field, Set: b.set(setUse{np, d, i, false, -1}, func() string { return b.podSet(np, r) })}})
		}
		if blocks {
			addrs = append(addrs, []Match{{Kind: MatchAddrIn, Field: field, Set: b.set(setUse{np, d, i, true, -1}, func() string { return b.rangeSet(r) })}})
		}
		return addrs
	}
	var out []ChainRule
	// The protocol and port come before the peer's set: a comparison is
	// cheaper than a set lookup, and a connection's first packet walks
	// every rule of its pods' chains until one allows it (with 100
	// policies selecting a pair, that order is worth several per cent of
	// the new-connection rate).
	add := func(ports []Match) {
		for _, a := range peerSets() {
			out = append(out, ChainRule{Match: append(slices.Clone(ports), a...), Action: allow, Comment: comment})
		}
	}
	if len(r.Ports) == 0 {
		add(nil)
		return out
	}
	for j, p := range r.Ports {
		proto := Match{Kind: MatchProto, Proto: p.Protocol}
		switch {
		case p.Invalid != nil:
		case p.Name != "" && d == Ingress:
			// Resolved on q, the destination.
			var nums []uint16
			for _, np := range q.Ports {
				if np.Name == p.Name && np.Protocol == p.Protocol {
					nums = append(nums, np.Port)
				}
			}
			slices.Sort(nums)
			for _, n := range slices.Compact(nums) {
				add([]Match{proto, {Kind: MatchPorts, Lo: n, Hi: n}})
			}
		case p.Name != "":
			// Resolved on each destination pod: the set holds the pods
			// the peers select (or all, without peers) with their number.
			out = append(out, ChainRule{Match: []Match{proto,
				{Kind: MatchAddrPortIn, Set: b.set(setUse{np, d, i, false, j}, func() string { return b.namedPortSet(np, r, p) })}},
				Action: allow, Comment: comment})
		case p.Port == 0:
			add([]Match{proto})
		default:
			hi := p.Port
			if p.EndPort != 0 {
				hi = p.EndPort
			}
			add([]Match{proto, {Kind: MatchPorts, Lo: p.Port, Hi: hi}})
		}
	}
	return out
}

// Sets are named after what defines their content, not after the
// policy that uses them: the selector peers of a rule (with the policy's
// namespace where a peer has no namespaceSelector), its ipBlocks, or, for
// an egress named port, its peers and the port's name and protocol. Rules
// that say the same thing, in any policy, share one set, which a pod's
// change updates once; the name stays while the definition does, so a
// pod's change never renames a set, and a policy's change renames only
// the sets of the rules it changed. The definition is the set's comment.

// setName is a set's name: its kind and a hash of its definition.
func setName(kind, def string) string {
	h := sha256.Sum256([]byte(def))
	return kind + "-" + hex.EncodeToString(h[:8])
}

// setComment is def cut to what a set's comment holds.
func setComment(def string) string {
	if len(def) > 200 {
		return def[:197] + "..."
	}
	return def
}

// peersDef is the canonical text of the valid peers of rule r of np:
// the selector peers, or the ipBlocks.
func peersDef(np *NetworkPolicy, r Rule, blocks bool) string {
	var ds []string
	for _, p := range r.Peers {
		switch {
		case p.Invalid != nil || (p.Block != nil) != blocks:
		case p.Block != nil:
			d := p.Block.CIDR.String()
			if len(p.Block.Except) > 0 {
				ex := make([]string, len(p.Block.Except))
				for i, e := range p.Block.Except {
					ex[i] = e.String()
				}
				slices.Sort(ex)
				d += " except " + strings.Join(ex, ",")
			}
			ds = append(ds, d)
		default:
			ns := "namespace " + np.Namespace
			if p.NamespaceSelector != nil {
				ns = "namespaces " + p.NamespaceSelector.String()
			}
			pods := "all pods"
			if p.PodSelector != nil {
				pods = "pods " + p.PodSelector.String()
			}
			ds = append(ds, pods+" in "+ns)
		}
	}
	slices.Sort(ds)
	return strings.Join(slices.Compact(ds), "; ")
}

// podSet is the set of the addresses of the pods that the selector peers
// of rule r of np select.
func (b *builder) podSet(np *NetworkPolicy, r Rule) string {
	def := peersDef(np, r, false)
	name := setName("pods", def)
	if _, ok := b.sets[name]; ok {
		return name
	}
	// Mark the selected pods by their rank in address order, then sweep:
	// sorted and distinct without a sort or a map.
	mark := make([]bool, len(b.m.byIP))
	n := 0
	for _, p := range r.Peers {
		if p.Invalid != nil || p.Block != nil {
			continue
		}
		for _, q := range b.peerPods(np, p) {
			if i, ok := b.m.rank[q]; ok && !mark[i] {
				mark[i] = true
				n++
			}
		}
	}
	s := &Set{Name: name, Kind: AddrSet, Comment: setComment(def), Elems: make([]Elem, 0, n)}
	for i, q := range b.m.byIP {
		if mark[i] {
			s.Elems = append(s.Elems, Elem{Addr: q.IP})
		}
	}
	b.sets[name] = s
	return name
}

// peerPods returns the pods the selector peer p of np selects.
func (b *builder) peerPods(np *NetworkPolicy, p Peer) []*Pod {
	var nss []string
	if p.NamespaceSelector == nil {
		nss = []string{np.Namespace}
	} else {
		for name, ns := range b.m.namespaces {
			if p.NamespaceSelector.Matches(ns.Labels) {
				nss = append(nss, name)
			}
		}
	}
	var out []*Pod
	for _, ns := range nss {
		for _, q := range b.m.podsByNS[ns] {
			if p.PodSelector == nil || p.PodSelector.Matches(q.Labels) {
				out = append(out, q)
			}
		}
	}
	return out
}

// rangeSet is the interval set of the ipBlocks of rule r.
func (b *builder) rangeSet(r Rule) string {
	def := peersDef(nil, r, true)
	name := setName("cidrs", def)
	if _, ok := b.sets[name]; ok {
		return name
	}
	var rs []addrRange
	for _, p := range r.Peers {
		if p.Invalid == nil && p.Block != nil {
			rs = append(rs, blockRanges(p.Block)...)
		}
	}
	s := &Set{Name: name, Kind: RangeSet, Comment: setComment(def)}
	for _, x := range mergeRanges(rs) {
		s.Elems = append(s.Elems, Elem{Addr: u32addr(x.lo), Last: u32addr(x.hi)})
	}
	b.sets[name] = s
	return name
}

// namedPortSet is the set of (address, number) of the pods that the
// egress rule r of np reaches and that carry the named port p.
func (b *builder) namedPortSet(np *NetworkPolicy, r Rule, p Port) string {
	def := "any destination"
	if len(r.Peers) > 0 {
		def = strings.Join(slices.DeleteFunc([]string{peersDef(np, r, false), peersDef(np, r, true)},
			func(s string) bool { return s == "" }), "; ")
		if def == "" {
			def = "no valid peer"
		}
	}
	def = p.Protocol.String() + "/" + p.Name + " of " + def
	name := setName("named", def)
	if _, ok := b.sets[name]; ok {
		return name
	}
	s := &Set{Name: name, Kind: AddrPortSet, Comment: setComment(def)}
	for _, q := range b.m.byIP { // address order: the set comes out sorted
		if len(r.Peers) > 0 && !slices.ContainsFunc(r.Peers, func(pe Peer) bool {
			return b.m.peerMatches(np, pe, Endpoint{Pod: q, IP: q.IP})
		}) {
			continue
		}
		var nums []uint16
		for _, cp := range q.Ports {
			if cp.Name == p.Name && cp.Protocol == p.Protocol {
				nums = append(nums, cp.Port)
			}
		}
		slices.Sort(nums)
		for _, n := range slices.Compact(nums) {
			s.Elems = append(s.Elems, Elem{Addr: q.IP, Port: n})
		}
	}
	b.sets[name] = s
	return name
}
