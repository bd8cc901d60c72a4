package policy

// Program: the compiled nftables program of one node as a small IR.
//
// It is pure data: policy/nft applies it to the kernel with
// google/nftables, Judge executes it in Go, and String prints it in nft
// syntax (what `nft list table ip weft-policy` shows, give or take the
// kernel's own spelling). Every value is sorted, so two compilations of
// the same model are equal and a diff of two programs is their real
// difference.

import (
	"fmt"
	"net/netip"
	"strings"
)

// Program is one nftables table of family ip: the pod network is IPv4,
// and IPv6 traffic never passes its hooks.
type Program struct {
	Table string
	// Local are the node's own addresses. The kernel knows them; Judge
	// needs them to pick the hook a packet passes (output from them,
	// input to them, forward otherwise).
	Local  []netip.Addr
	Sets   []*Set   // sorted by name
	Chains []*Chain // the base chains, then the others sorted by name
}

// Hook is where a base chain hangs; HookNone marks a regular chain.
type Hook uint8

// Hooks.
const (
	HookNone Hook = iota
	HookForward
	HookInput
)

func (h Hook) String() string {
	switch h {
	case HookForward:
		return "forward"
	case HookInput:
		return "input"
	}
	return "none"
}

// Chain is a chain and its rules. A base chain is of type filter at
// priority filter with policy accept.
type Chain struct {
	Name  string
	Hook  Hook
	Rules []ChainRule
}

// SetKind is the type of a set.
type SetKind uint8

// Set kinds.
const (
	AddrSet     SetKind = iota // type ipv4_addr
	RangeSet                   // type ipv4_addr; flags interval
	AddrPortSet                // type ipv4_addr . inet_service
	VerdictMap                 // type ipv4_addr : verdict (jump to a chain)
)

func (k SetKind) String() string {
	switch k {
	case RangeSet:
		return "range"
	case AddrPortSet:
		return "addr-port"
	case VerdictMap:
		return "vmap"
	}
	return "addr"
}

// Set is a named set or verdict map.
type Set struct {
	Name    string
	Kind    SetKind
	Comment string // what defines the content, for people
	Elems   []Elem // sorted; a RangeSet's ranges are disjoint and not adjacent
}

// Elem is one element of a set.
type Elem struct {
	Addr  netip.Addr // the key; a RangeSet's first address
	Last  netip.Addr // RangeSet: the last address, inclusive
	Port  uint16     // AddrPortSet: the port
	Chain string     // VerdictMap: the chain to jump to
}

func (e Elem) String() string {
	switch {
	case e.Last.IsValid():
		if e.Last == e.Addr {
			return e.Addr.String()
		}
		return e.Addr.String() + "-" + e.Last.String()
	case e.Chain != "":
		return e.Addr.String() + " : jump " + e.Chain
	case e.Port != 0:
		return fmt.Sprintf("%v . %d", e.Addr, e.Port)
	}
	return e.Addr.String()
}

// Field is an address field of the IPv4 header.
type Field uint8

// Fields.
const (
	Saddr Field = iota
	Daddr
)

func (f Field) String() string {
	if f == Daddr {
		return "daddr"
	}
	return "saddr"
}

// MatchKind is the kind of a Match.
type MatchKind uint8

// Match kinds, each one nft expression group.
const (
	MatchEstablished MatchKind = iota // ct state established,related
	MatchAddrIn                       // ip <Field> @<Set>
	MatchAddrPortIn                   // ip daddr . th dport @<Set>
	MatchProto                        // meta l4proto <Proto>
	MatchPorts                        // th dport <Lo>-<Hi>
	MatchSpoofed                      // iifname "<Prefix>*" fib saddr . iif oif missing
)

// Match is one condition of a rule.
type Match struct {
	Kind   MatchKind
	Field  Field    // MatchAddrIn
	Set    string   // MatchAddrIn, MatchAddrPortIn
	Proto  Protocol // MatchProto
	Lo, Hi uint16   // MatchPorts, inclusive
	Prefix string   // MatchSpoofed: the name prefix of pods' host veths
}

func (m Match) String() string {
	switch m.Kind {
	case MatchEstablished:
		return "ct state established,related"
	case MatchAddrIn:
		return "ip " + m.Field.String() + " @" + m.Set
	case MatchAddrPortIn:
		return "ip daddr . th dport @" + m.Set
	case MatchProto:
		return "meta l4proto " + m.Proto.nftName()
	case MatchPorts:
		if m.Lo == m.Hi {
			return fmt.Sprintf("th dport %d", m.Lo)
		}
		return fmt.Sprintf("th dport %d-%d", m.Lo, m.Hi)
	case MatchSpoofed:
		return fmt.Sprintf("iifname %q fib saddr . iif oif missing", m.Prefix+"*")
	}
	return fmt.Sprintf("match(%d)", m.Kind)
}

// ActionKind is what a matching rule does.
type ActionKind uint8

// Action kinds.
const (
	Continue ActionKind = iota // no verdict: go on with the next rule
	Accept
	Drop
	Return
	Jump     // to Action.Chain
	Dispatch // ip <Field> vmap @<Map>: jump where the map says, or go on
)

// Action is a rule's verdict.
type Action struct {
	Kind  ActionKind
	Chain string // Jump
	Map   string // Dispatch
	Field Field  // Dispatch: the key
}

func (v Action) String() string {
	switch v.Kind {
	case Accept:
		return "accept"
	case Drop:
		return "drop"
	case Return:
		return "return"
	case Jump:
		return "jump " + v.Chain
	case Dispatch:
		return "ip " + v.Field.String() + " vmap @" + v.Map
	}
	return ""
}

// Log is a rate-limited NFLOG statement.
type Log struct {
	Prefix string
	Group  uint16 // NFLOG group
	Rate   uint32 // packets per second
	Burst  uint32 // packets
}

// ChainRule is a rule of a chain: all matches hold, then log, count, and
// act.
type ChainRule struct {
	Match   []Match
	Log     *Log
	Counter bool
	Action  Action
	Comment string // the policy rule it states, for people
}

// String is the rule in nft syntax. It identifies the rule: policy/nft
// keeps it (bounded in length) in the kernel rule's comment to find it
// again.
func (r ChainRule) String() string {
	var parts []string
	for _, m := range r.Match {
		parts = append(parts, m.String())
	}
	if r.Log != nil {
		parts = append(parts, fmt.Sprintf("limit rate %d/second burst %d packets log prefix %q group %d",
			r.Log.Rate, r.Log.Burst, r.Log.Prefix, r.Log.Group))
	}
	if r.Counter {
		parts = append(parts, "counter")
	}
	if v := r.Action.String(); v != "" {
		parts = append(parts, v)
	}
	if r.Comment != "" {
		parts = append(parts, fmt.Sprintf("comment %q", r.Comment))
	}
	return strings.Join(parts, " ")
}

// String prints the program in nft syntax.
func (p *Program) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table ip %s {\n", p.Table)
	for _, s := range p.Sets {
		word, typ, flags := "set", "ipv4_addr", ""
		switch s.Kind {
		case RangeSet:
			flags = "\t\tflags interval\n"
		case AddrPortSet:
			typ = "ipv4_addr . inet_service"
		case VerdictMap:
			word, typ = "map", "ipv4_addr : verdict"
		}
		fmt.Fprintf(&b, "\t%s %s {\n\t\ttype %s\n%s", word, s.Name, typ, flags)
		if s.Comment != "" {
			fmt.Fprintf(&b, "\t\tcomment %q\n", s.Comment)
		}
		if len(s.Elems) > 0 {
			es := make([]string, len(s.Elems))
			for i, e := range s.Elems {
				es[i] = e.String()
			}
			fmt.Fprintf(&b, "\t\telements = { %s }\n", strings.Join(es, ", "))
		}
		b.WriteString("\t}\n")
	}
	for _, c := range p.Chains {
		fmt.Fprintf(&b, "\tchain %s {\n", c.Name)
		if c.Hook != HookNone {
			fmt.Fprintf(&b, "\t\ttype filter hook %v priority filter; policy accept;\n", c.Hook)
		}
		for _, r := range c.Rules {
			fmt.Fprintf(&b, "\t\t%v\n", r)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// Set returns the set called name.
func (p *Program) Set(name string) (*Set, bool) {
	for _, s := range p.Sets {
		if s.Name == name {
			return s, true
		}
	}
	return nil, false
}

// Chain returns the chain called name.
func (p *Program) Chain(name string) (*Chain, bool) {
	for _, c := range p.Chains {
		if c.Name == name {
			return c, true
		}
	}
	return nil, false
}
