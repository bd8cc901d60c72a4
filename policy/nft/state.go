package nft

// State: what one table holds, in the terms the diff needs. StateOf
// computes the state a Program wants; Conn.Read reads the one the kernel
// has; State.Apply runs an Op on a State with the kernel's refusals, so
// the fake kernel (nfttest) catches an order the kernel would refuse.
//
// Rules read from the kernel are known by their key (the IR rule's nft
// text, kept in the kernel rule's comment); rules of a program also by
// their IR, which compares without building text: the Applier's plan
// against what it applied last costs a walk over the program, not a
// rendering of it. Set elements are sorted slices, diffed by a merge.

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/weftmesh/weft/policy"
)

// State is the content of one table. A State made by StateOf shares the
// program's slices: the program must not change afterwards.
type State struct {
	Chains map[string]*ChainState
	Sets   map[string]*SetState
}

// ChainState is a chain's hook and its rules in order: their IR when
// known (from a program), else only their keys (read from the kernel).
type ChainState struct {
	Hook  policy.Hook
	Rules []string           // keys; nil when IR is set
	IR    []policy.ChainRule // nil when read from the kernel
}

// Keys returns the keys of the chain's rules.
func (c *ChainState) Keys() []string {
	if c.IR == nil {
		return c.Rules
	}
	keys := make([]string, len(c.IR))
	for i, r := range c.IR {
		keys[i] = RuleKey(r)
	}
	return keys
}

// len is the number of rules.
func (c *ChainState) len() int { return max(len(c.Rules), len(c.IR)) }

// sameRules reports whether the chain holds exactly rules.
func (c *ChainState) sameRules(rules []policy.ChainRule) bool {
	if c.IR != nil || len(c.Rules) == 0 {
		return slices.EqualFunc(c.IR, rules, ruleEqual)
	}
	if len(c.Rules) != len(rules) {
		return false
	}
	for i, r := range rules {
		if c.Rules[i] != RuleKey(r) {
			return false
		}
	}
	return true
}

func ruleEqual(a, b policy.ChainRule) bool {
	if a.Counter != b.Counter || a.Action != b.Action || a.Comment != b.Comment || !slices.Equal(a.Match, b.Match) || (a.Log == nil) != (b.Log == nil) {
		return false
	}
	return a.Log == nil || *a.Log == *b.Log
}

// SetState is a set's kind and elements, sorted by CompareElem, distinct.
type SetState struct {
	Kind  policy.SetKind
	Elems []policy.Elem
}

// NewState returns an empty table's state.
func NewState() *State {
	return &State{Chains: map[string]*ChainState{}, Sets: map[string]*SetState{}}
}

// maxKey bounds a rule key: the kernel keeps at most 256 bytes of a
// rule's user data, the comment's type and length included.
const maxKey = 240

// RuleKey identifies rule r: its nft text, or a head of it and a hash
// when that is too long for a comment.
func RuleKey(r policy.ChainRule) string {
	// Double quotes (around a log prefix) would garble nft's listing of
	// the comment.
	s := strings.ReplaceAll(r.String(), `"`, "'")
	if len(s) <= maxKey {
		return s
	}
	h := sha256.Sum256([]byte(s))
	return s[:maxKey-18] + " #" + hex.EncodeToString(h[:8])
}

// StateOf is the state that program p wants. It shares p's slices.
func StateOf(p *policy.Program) *State {
	s := NewState()
	for _, c := range p.Chains {
		ir := c.Rules
		if ir == nil {
			ir = []policy.ChainRule{}
		}
		s.Chains[c.Name] = &ChainState{Hook: c.Hook, IR: ir}
	}
	for _, set := range p.Sets {
		s.Sets[set.Name] = &SetState{Kind: set.Kind, Elems: set.Elems}
	}
	return s
}

// Clone returns a copy of s that shares nothing that Apply changes.
func (s *State) Clone() *State {
	out := NewState()
	for n, c := range s.Chains {
		out.Chains[n] = &ChainState{Hook: c.Hook, Rules: slices.Clip(c.Rules), IR: slices.Clip(c.IR)}
	}
	for n, set := range s.Sets {
		out.Sets[n] = &SetState{Kind: set.Kind, Elems: slices.Clip(set.Elems)}
	}
	return out
}

// Equal reports whether s and o hold the same chains, rules and elements.
func (s *State) Equal(o *State) bool { return s.Diff(o) == "" }

// Diff describes how o differs from s, "" when it does not.
func (s *State) Diff(o *State) string {
	var d []string
	for _, n := range sortedKeys(s.Chains) {
		c, oc := s.Chains[n], o.Chains[n]
		switch {
		case oc == nil:
			d = append(d, "-chain "+n)
		case c.Hook != oc.Hook || !slices.Equal(c.Keys(), oc.Keys()):
			d = append(d, fmt.Sprintf("~chain %s: %v %q → %v %q", n, c.Hook, c.Keys(), oc.Hook, oc.Keys()))
		}
	}
	for _, n := range sortedKeys(o.Chains) {
		if s.Chains[n] == nil {
			d = append(d, "+chain "+n)
		}
	}
	for _, n := range sortedKeys(s.Sets) {
		set, os := s.Sets[n], o.Sets[n]
		switch {
		case os == nil:
			d = append(d, "-set "+n)
		case set.Kind != os.Kind || !slices.Equal(set.Elems, os.Elems):
			d = append(d, fmt.Sprintf("~set %s: %v %v → %v %v", n, set.Kind, set.Elems, os.Kind, os.Elems))
		}
	}
	for _, n := range sortedKeys(o.Sets) {
		if s.Sets[n] == nil {
			d = append(d, "+set "+n)
		}
	}
	return strings.Join(d, "; ")
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// CompareElem orders set elements: by address, then port, range end and
// chain.
func CompareElem(a, b policy.Elem) int {
	return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Port, b.Port), a.Last.Compare(b.Last), cmp.Compare(a.Chain, b.Chain))
}

// Errors of State.Apply, as the kernel would refuse.
var (
	ErrExists   = errors.New("exists")
	ErrNotFound = errors.New("not found")
	ErrBusy     = errors.New("in use")
	ErrMismatch = errors.New("type mismatch")
)

// Apply runs op on s, refusing what the kernel would refuse within one
// transaction: adding what exists (elements, ranges overlapping a range),
// deleting what does not, deleting a chain with rules or one a verdict
// map jumps to, deleting a set a rule uses, a rule using a missing set or
// one of another type, a map element jumping to a missing chain.
func (s *State) Apply(op Op) error {
	switch op.Kind {
	case AddTable:
		return nil
	case DelTable:
		*s = *NewState()
		return nil
	case AddChain:
		if c, ok := s.Chains[op.Chain]; ok {
			if c.Hook != op.Hook {
				return fmt.Errorf("%v: %w with another hook", op, ErrExists)
			}
			return nil // like nft add chain: no error for an existing chain
		}
		s.Chains[op.Chain] = &ChainState{Hook: op.Hook}
	case FlushChain:
		c, ok := s.Chains[op.Chain]
		if !ok {
			return fmt.Errorf("%v: %w", op, ErrNotFound)
		}
		c.Rules, c.IR = nil, nil
	case DelChain:
		c, ok := s.Chains[op.Chain]
		switch {
		case !ok:
			return fmt.Errorf("%v: %w", op, ErrNotFound)
		case c.len() > 0:
			return fmt.Errorf("%v: %w: chain has rules", op, ErrBusy)
		case s.jumpedTo(op.Chain):
			return fmt.Errorf("%v: %w: a map jumps to it", op, ErrBusy)
		}
		delete(s.Chains, op.Chain)
	case AddRule:
		c, ok := s.Chains[op.Chain]
		if !ok {
			return fmt.Errorf("%v: chain %w", op, ErrNotFound)
		}
		for name, kinds := range ruleSets(op.Rule) {
			set, ok := s.Sets[name]
			if !ok {
				return fmt.Errorf("%v: set %s %w", op, name, ErrNotFound)
			}
			if !slices.Contains(kinds, set.Kind) {
				return fmt.Errorf("%v: set %s is of type %v: %w", op, name, set.Kind, ErrMismatch)
			}
		}
		if j := op.Rule.Action; j.Kind == policy.Jump {
			if _, ok := s.Chains[j.Chain]; !ok {
				return fmt.Errorf("%v: chain %s %w", op, j.Chain, ErrNotFound)
			}
		}
		c.Rules = append(c.Keys(), RuleKey(op.Rule))
		c.IR = nil
	case AddSet:
		if set, ok := s.Sets[op.Set]; ok {
			if set.Kind != op.SetKind {
				return fmt.Errorf("%v: %w with another type", op, ErrExists)
			}
			return nil
		}
		s.Sets[op.Set] = &SetState{Kind: op.SetKind}
	case DelSet:
		if _, ok := s.Sets[op.Set]; !ok {
			return fmt.Errorf("%v: %w", op, ErrNotFound)
		}
		if s.setUsed(op.Set) {
			return fmt.Errorf("%v: %w: a rule uses it", op, ErrBusy)
		}
		delete(s.Sets, op.Set)
	case AddElems, DelElems:
		set, ok := s.Sets[op.Set]
		if !ok {
			return fmt.Errorf("%v: set %w", op, ErrNotFound)
		}
		elems := slices.Clone(set.Elems)
		for _, e := range op.Elems {
			i, found := slices.BinarySearchFunc(elems, e, CompareElem)
			if op.Kind == DelElems {
				if !found {
					return fmt.Errorf("%v: element %v %w", op, e, ErrNotFound)
				}
				elems = slices.Delete(elems, i, i+1)
				continue
			}
			if found || (set.Kind == policy.RangeSet && overlaps(elems, e)) {
				return fmt.Errorf("%v: element %v %w", op, e, ErrExists)
			}
			if e.Chain != "" {
				if _, ok := s.Chains[e.Chain]; !ok {
					return fmt.Errorf("%v: chain %s %w", op, e.Chain, ErrNotFound)
				}
			}
			elems = slices.Insert(elems, i, e)
		}
		set.Elems = elems
	default:
		return fmt.Errorf("unknown op %d", op.Kind)
	}
	return nil
}

func (s *State) jumpedTo(chain string) bool {
	for _, set := range s.Sets {
		for _, e := range set.Elems {
			if e.Chain == chain {
				return true
			}
		}
	}
	return false
}

// setUsed reports whether a rule of s uses set name.
func (s *State) setUsed(name string) bool {
	for _, c := range s.Chains {
		for _, r := range c.IR {
			if _, ok := ruleSets(r)[name]; ok {
				return true
			}
		}
		for _, key := range c.Rules {
			if usesSet(key, name) {
				return true
			}
		}
	}
	return false
}

// usesSet reports whether a rule key refers to set name: "@name" followed
// by a space or the end.
func usesSet(key, name string) bool {
	ref := "@" + name
	for i := 0; i+len(ref) <= len(key); i++ {
		if key[i:i+len(ref)] == ref && (i+len(ref) == len(key) || key[i+len(ref)] == ' ') {
			return true
		}
	}
	return false
}

// ruleSets returns the sets and maps rule r uses, each with the types
// that its use accepts (a lookup's key must be the set's).
func ruleSets(r policy.ChainRule) map[string][]policy.SetKind {
	out := map[string][]policy.SetKind{}
	for _, m := range r.Match {
		switch m.Kind {
		case policy.MatchAddrIn:
			out[m.Set] = []policy.SetKind{policy.AddrSet, policy.RangeSet}
		case policy.MatchAddrPortIn:
			out[m.Set] = []policy.SetKind{policy.AddrPortSet}
		}
	}
	if r.Action.Kind == policy.Dispatch {
		out[r.Action.Map] = []policy.SetKind{policy.VerdictMap}
	}
	return out
}

func overlaps(elems []policy.Elem, e policy.Elem) bool {
	for _, o := range elems {
		if o.Addr.Compare(e.Last) <= 0 && e.Addr.Compare(o.Last) <= 0 {
			return true
		}
	}
	return false
}
