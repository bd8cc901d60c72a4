package policy

// The interpreter: Program.Judge runs a program on one packet the way
// netfilter would, so tests can hold the compiled program against the
// evaluator without a kernel. It models exactly what the IR can say; the
// kernel tests hold the kernel against it.

import (
	"fmt"
	"net/netip"
	"slices"
)

// Packet is what Judge looks at.
type Packet struct {
	Src, Dst    netip.Addr
	Proto       Protocol
	Port        uint16 // destination port; 0 for protocols without ports
	Established bool   // conntrack has seen both directions (or it is related)
}

// Judgement is the program's verdict on a packet.
type Judgement struct {
	Accept bool
	Hook   string   // "forward", "input" or "output"
	Chain  string   // the chain whose verdict decided; "" for a base chain's policy
	Logs   []string // prefixes of the NFLOG statements the packet met
}

func (j Judgement) String() string {
	v := "drop"
	if j.Accept {
		v = "accept"
	}
	return fmt.Sprintf("%s in %s (chain %q, logs %q)", v, j.Hook, j.Chain, j.Logs)
}

// index is a program's sets in lookup form.
type index struct {
	addrs  map[string]map[netip.Addr]bool
	ranges map[string][]Elem
	pairs  map[string]map[Elem]bool
	vmaps  map[string]map[netip.Addr]string
	chains map[string]*Chain
	local  map[netip.Addr]bool
}

// Judge runs the program on pkt. It indexes the sets on every call:
// cheap for tests; use Judger for many packets.
func (p *Program) Judge(pkt Packet) Judgement { return p.Judger()(pkt) }

// Judger indexes the program once and returns Judge for it. The program
// must not change while the function is in use.
func (p *Program) Judger() func(Packet) Judgement {
	x := p.index()
	return x.judge
}

func (x *index) judge(pkt Packet) Judgement {
	hook, base := "forward", ChainForward
	switch {
	case x.local[pkt.Src]:
		return Judgement{Accept: true, Hook: "output"} // no chain on output
	case x.local[pkt.Dst]:
		hook, base = "input", ChainInput
	}
	j := Judgement{Hook: hook}
	ch, ok := x.chains[base]
	if !ok {
		j.Accept = true
		return j
	}
	v, where := x.run(ch, pkt, &j, 0)
	j.Accept = v != Drop
	if v == Accept || v == Drop {
		j.Chain = where
	}
	return j
}

func (p *Program) index() *index {
	x := &index{addrs: map[string]map[netip.Addr]bool{}, ranges: map[string][]Elem{},
		pairs: map[string]map[Elem]bool{}, vmaps: map[string]map[netip.Addr]string{},
		chains: map[string]*Chain{}, local: map[netip.Addr]bool{}}
	for _, s := range p.Sets {
		switch s.Kind {
		case AddrSet:
			m := map[netip.Addr]bool{}
			for _, e := range s.Elems {
				m[e.Addr] = true
			}
			x.addrs[s.Name] = m
		case RangeSet:
			x.ranges[s.Name] = s.Elems
		case AddrPortSet:
			m := map[Elem]bool{}
			for _, e := range s.Elems {
				m[Elem{Addr: e.Addr, Port: e.Port}] = true
			}
			x.pairs[s.Name] = m
		case VerdictMap:
			m := map[netip.Addr]string{}
			for _, e := range s.Elems {
				m[e.Addr] = e.Chain
			}
			x.vmaps[s.Name] = m
		}
	}
	for _, c := range p.Chains {
		x.chains[c.Name] = c
	}
	for _, a := range p.Local {
		x.local[a] = true
	}
	return x
}

// maxDepth bounds jumps, as the kernel's 16 levels do.
const maxDepth = 16

// run executes chain c and returns its outcome (Accept, Drop, or Return
// when it ran off its end or returned) and the chain that decided.
func (x *index) run(c *Chain, pkt Packet, j *Judgement, depth int) (ActionKind, string) {
	if depth > maxDepth {
		return Drop, c.Name
	}
	for _, r := range c.Rules {
		if !x.matches(r, pkt) {
			continue
		}
		if r.Log != nil {
			j.Logs = append(j.Logs, r.Log.Prefix)
		}
		target := ""
		switch r.Action.Kind {
		case Continue:
			continue
		case Accept, Drop:
			return r.Action.Kind, c.Name
		case Return:
			return Return, c.Name
		case Jump:
			target = r.Action.Chain
		case Dispatch:
			target = x.vmaps[r.Action.Map][field(pkt, r.Action.Field)]
			if target == "" {
				continue
			}
		}
		next, ok := x.chains[target]
		if !ok {
			return Drop, c.Name // the kernel refuses a jump to a missing chain; never here
		}
		if v, where := x.run(next, pkt, j, depth+1); v != Return {
			return v, where
		}
	}
	return Return, c.Name
}

func field(pkt Packet, f Field) netip.Addr {
	if f == Daddr {
		return pkt.Dst
	}
	return pkt.Src
}

func (x *index) matches(r ChainRule, pkt Packet) bool {
	for _, m := range r.Match {
		var ok bool
		switch m.Kind {
		case MatchEstablished:
			ok = pkt.Established
		case MatchAddrIn:
			a := field(pkt, m.Field)
			if rs, isRange := x.ranges[m.Set]; isRange {
				ok = inRanges(rs, a)
			} else {
				ok = x.addrs[m.Set][a]
			}
		case MatchAddrPortIn:
			ok = x.pairs[m.Set][Elem{Addr: pkt.Dst, Port: pkt.Port}]
		case MatchProto:
			ok = pkt.Proto == m.Proto
		case MatchPorts:
			ok = m.Lo <= pkt.Port && pkt.Port <= m.Hi
		}
		if !ok {
			return false
		}
	}
	return true
}

func inRanges(rs []Elem, a netip.Addr) bool {
	i, _ := slices.BinarySearchFunc(rs, a, func(e Elem, a netip.Addr) int { return e.Addr.Compare(a) })
	// rs[i-1] is the last range starting at or before a (or rs[i] starts at a).
	if i < len(rs) && rs[i].Addr == a {
		return true
	}
	return i > 0 && a.Compare(rs[i-1].Last) <= 0
}
