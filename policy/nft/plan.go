package nft

// The diff: Plan turns what a table holds and what a Program wants into
// the operations of one transaction. It is pure; the kernel (Conn) runs
// the operations in one netlink batch, so no packet ever sees a half
// state.
//
// Order within the batch, so that every operation finds what it needs
// and nothing in use is deleted:
//
//  1. the table, if missing;
//  2. new sets and maps (empty), new chains (empty);
//  3. set elements, per set deletions before additions (an interval set
//     refuses a range that overlaps one still there);
//  4. changed chains: flush, then all their rules (a chain's rules are
//     replaced whole: a pod's chain is a handful of rules);
//  5. verdict map elements: deletions, then additions (new chains have
//     their rules by now);
//  6. chains gone: flush, delete (no map jumps to them any more);
//  7. sets gone (no rule uses them any more).
//
// A chain whose hook or a set whose type is not what the program wants
// (someone else's object of that name) makes the plan rebuild the table:
// delete it and create it anew, in the same batch.

import (
	"fmt"
	"slices"
	"strings"

	"github.com/weftmesh/weft/policy"
)

// OpKind is the kind of an Op.
type OpKind uint8

// Operation kinds.
const (
	AddTable OpKind = iota
	DelTable
	AddChain
	FlushChain
	DelChain
	AddRule
	AddSet
	DelSet
	AddElems
	DelElems
)

// Op is one operation on a table.
type Op struct {
	Kind    OpKind
	Chain   string           // chain operations, AddRule
	Hook    policy.Hook      // AddChain
	Rule    policy.ChainRule // AddRule
	Set     string           // set operations
	SetKind policy.SetKind   // AddSet, AddElems, DelElems
	Comment string           // AddSet
	Elems   []policy.Elem    // AddElems, DelElems, sorted
}

// String is the operation as one transcript line, in nft's words.
func (o Op) String() string {
	switch o.Kind {
	case AddTable:
		return "add table"
	case DelTable:
		return "delete table"
	case AddChain:
		if o.Hook != policy.HookNone {
			return fmt.Sprintf("add chain %s { hook %v }", o.Chain, o.Hook)
		}
		return "add chain " + o.Chain
	case FlushChain:
		return "flush chain " + o.Chain
	case DelChain:
		return "delete chain " + o.Chain
	case AddRule:
		return "add rule " + o.Chain + " " + o.Rule.String()
	case AddSet:
		return fmt.Sprintf("add %s %s", setWord(o.SetKind), o.Set)
	case DelSet:
		return "delete set " + o.Set
	case AddElems, DelElems:
		verb := "add"
		if o.Kind == DelElems {
			verb = "delete"
		}
		es := make([]string, len(o.Elems))
		for i, e := range o.Elems {
			es[i] = e.String()
		}
		return fmt.Sprintf("%s element %s { %s }", verb, o.Set, strings.Join(es, ", "))
	}
	return fmt.Sprintf("op(%d)", o.Kind)
}

func setWord(k policy.SetKind) string {
	switch k {
	case policy.RangeSet:
		return "set (interval)"
	case policy.AddrPortSet:
		return "set (addr . port)"
	case policy.VerdictMap:
		return "map"
	}
	return "set"
}

// Plan returns the operations that turn have (nil: the table is absent)
// into what want says, none when have is already that.
func Plan(have *State, want *policy.Program) []Op {
	var ops []Op
	if have == nil {
		ops = append(ops, Op{Kind: AddTable})
		have = NewState()
	} else if foreign(have, want) {
		ops = append(ops, Op{Kind: DelTable}, Op{Kind: AddTable})
		have = NewState()
	}
	// 2. New sets and chains.
	for _, s := range want.Sets {
		if _, ok := have.Sets[s.Name]; !ok {
			ops = append(ops, Op{Kind: AddSet, Set: s.Name, SetKind: s.Kind, Comment: s.Comment})
		}
	}
	for _, c := range want.Chains {
		if _, ok := have.Chains[c.Name]; !ok {
			ops = append(ops, Op{Kind: AddChain, Chain: c.Name, Hook: c.Hook})
		}
	}
	// 3. Elements of sets.
	var mapOps []Op
	for _, s := range want.Sets {
		var old []policy.Elem
		if hs, ok := have.Sets[s.Name]; ok {
			old = hs.Elems
		}
		add, del := elemDiff(old, s.Elems)
		var these []Op
		if len(del) > 0 {
			these = append(these, Op{Kind: DelElems, Set: s.Name, SetKind: s.Kind, Elems: del})
		}
		if len(add) > 0 {
			these = append(these, Op{Kind: AddElems, Set: s.Name, SetKind: s.Kind, Elems: add})
		}
		if s.Kind == policy.VerdictMap {
			mapOps = append(mapOps, these...)
		} else {
			ops = append(ops, these...)
		}
	}
	// 4. Rules of changed chains.
	for _, c := range want.Chains {
		hc, ok := have.Chains[c.Name]
		if ok && hc.sameRules(c.Rules) {
			continue
		}
		if ok && hc.len() > 0 {
			ops = append(ops, Op{Kind: FlushChain, Chain: c.Name})
		}
		for _, r := range c.Rules {
			ops = append(ops, Op{Kind: AddRule, Chain: c.Name, Rule: r})
		}
	}
	// 5. Verdict maps.
	slices.SortStableFunc(mapOps, func(a, b Op) int { return int(b.Kind) - int(a.Kind) }) // DelElems first
	ops = append(ops, mapOps...)
	// 6, 7. What is gone.
	wantChains := make(map[string]bool, len(want.Chains))
	for _, c := range want.Chains {
		wantChains[c.Name] = true
	}
	wantSets := make(map[string]bool, len(want.Sets))
	for _, s := range want.Sets {
		wantSets[s.Name] = true
	}
	for _, name := range sortedKeys(have.Chains) {
		if !wantChains[name] {
			if have.Chains[name].len() > 0 {
				ops = append(ops, Op{Kind: FlushChain, Chain: name})
			}
			ops = append(ops, Op{Kind: DelChain, Chain: name})
		}
	}
	for _, name := range sortedKeys(have.Sets) {
		if !wantSets[name] {
			ops = append(ops, Op{Kind: DelSet, Set: name})
		}
	}
	return ops
}

// foreign reports whether have holds a chain or set of a wanted name but
// of another hook or type.
func foreign(have *State, want *policy.Program) bool {
	for _, c := range want.Chains {
		if hc, ok := have.Chains[c.Name]; ok && hc.Hook != c.Hook {
			return true
		}
	}
	for _, s := range want.Sets {
		if hs, ok := have.Sets[s.Name]; ok && hs.Kind != s.Kind {
			return true
		}
	}
	return false
}

// elemDiff returns the elements of want missing from have, and those of
// have missing from want, both sorted. Both are sorted by CompareElem
// (want is sorted here if it is not).
func elemDiff(have, want []policy.Elem) (add, del []policy.Elem) {
	if slices.Equal(have, want) {
		return nil, nil
	}
	if !slices.IsSortedFunc(want, CompareElem) {
		want = slices.Clone(want)
		slices.SortFunc(want, CompareElem)
	}
	i, j := 0, 0
	for i < len(have) || j < len(want) {
		switch {
		case j == len(want):
			del = append(del, have[i])
			i++
		case i == len(have):
			add = append(add, want[j])
			j++
		default:
			switch c := CompareElem(have[i], want[j]); {
			case c == 0:
				i++
				j++
			case c < 0:
				del = append(del, have[i])
				i++
			default:
				add = append(add, want[j])
				j++
			}
		}
	}
	return add, del
}
