package nft

// State: what one table holds, in the terms the diff needs. Rules are
// known by their key (the IR rule's nft text, kept in the kernel rule's
// comment), set elements by value. StateOf computes the state a Program
// wants; Conn.Read reads the one the kernel has; State.Apply runs an Op on
// a State with the kernel's refusals, so the fake kernel (nfttest) catches
// an order the kernel would refuse.

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/weftmesh/weft/policy"
)

// State is the content of one table.
type State struct {
	Chains map[string]*ChainState
	Sets   map[string]*SetState
}

// ChainState is a chain's hook and its rules' keys in order.
type ChainState struct {
	Hook  policy.Hook
	Rules []string
}

// SetState is a set's kind and elements.
type SetState struct {
	Kind  policy.SetKind
	Elems map[policy.Elem]bool
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

// StateOf is the state that program p wants.
func StateOf(p *policy.Program) *State {
	s := NewState()
	for _, c := range p.Chains {
		cs := &ChainState{Hook: c.Hook}
		for _, r := range c.Rules {
			cs.Rules = append(cs.Rules, RuleKey(r))
		}
		s.Chains[c.Name] = cs
	}
	for _, set := range p.Sets {
		ss := &SetState{Kind: set.Kind, Elems: map[policy.Elem]bool{}}
		for _, e := range set.Elems {
			ss.Elems[e] = true
		}
		s.Sets[set.Name] = ss
	}
	return s
}

// Clone returns a deep copy of s.
func (s *State) Clone() *State {
	out := NewState()
	for n, c := range s.Chains {
		out.Chains[n] = &ChainState{Hook: c.Hook, Rules: slices.Clone(c.Rules)}
	}
	for n, set := range s.Sets {
		out.Sets[n] = &SetState{Kind: set.Kind, Elems: maps.Clone(set.Elems)}
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
		case c.Hook != oc.Hook || !slices.Equal(c.Rules, oc.Rules):
			d = append(d, fmt.Sprintf("~chain %s: %v %q → %v %q", n, c.Hook, c.Rules, oc.Hook, oc.Rules))
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
		case set.Kind != os.Kind || !maps.Equal(set.Elems, os.Elems):
			d = append(d, fmt.Sprintf("~set %s: %v %v → %v %v", n, set.Kind, sortedElems(set.Elems), os.Kind, sortedElems(os.Elems)))
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

func sortedElems(m map[policy.Elem]bool) []policy.Elem {
	es := slices.Collect(maps.Keys(m))
	slices.SortFunc(es, compareElem)
	return es
}

func compareElem(a, b policy.Elem) int {
	if c := a.Addr.Compare(b.Addr); c != 0 {
		return c
	}
	if a.Port != b.Port {
		return int(a.Port) - int(b.Port)
	}
	return 0
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
// a map element jumping to a missing chain.
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
		c.Rules = nil
	case DelChain:
		c, ok := s.Chains[op.Chain]
		switch {
		case !ok:
			return fmt.Errorf("%v: %w", op, ErrNotFound)
		case len(c.Rules) > 0:
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
		c.Rules = append(c.Rules, RuleKey(op.Rule))
	case AddSet:
		if set, ok := s.Sets[op.Set]; ok {
			if set.Kind != op.SetKind {
				return fmt.Errorf("%v: %w with another type", op, ErrExists)
			}
			return nil
		}
		s.Sets[op.Set] = &SetState{Kind: op.SetKind, Elems: map[policy.Elem]bool{}}
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
		for _, e := range op.Elems {
			if op.Kind == DelElems {
				if !set.Elems[e] {
					return fmt.Errorf("%v: element %v %w", op, e, ErrNotFound)
				}
				delete(set.Elems, e)
				continue
			}
			if set.Elems[e] || (set.Kind == policy.RangeSet && overlaps(set.Elems, e)) {
				return fmt.Errorf("%v: element %v %w", op, e, ErrExists)
			}
			if e.Chain != "" {
				if _, ok := s.Chains[e.Chain]; !ok {
					return fmt.Errorf("%v: chain %s %w", op, e.Chain, ErrNotFound)
				}
			}
			set.Elems[e] = true
		}
	default:
		return fmt.Errorf("unknown op %d", op.Kind)
	}
	return nil
}

func (s *State) jumpedTo(chain string) bool {
	for _, set := range s.Sets {
		for e := range set.Elems {
			if e.Chain == chain {
				return true
			}
		}
	}
	return false
}

// setUsed reports whether a rule of s uses set name. Rules are known by
// key only, so this looks for "@name" followed by a space or the end.
func (s *State) setUsed(name string) bool {
	for _, c := range s.Chains {
		for _, r := range c.Rules {
			if usesSet(r, name) {
				return true
			}
		}
	}
	return false
}

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

func overlaps(elems map[policy.Elem]bool, e policy.Elem) bool {
	for o := range elems {
		if o.Addr.Compare(e.Last) <= 0 && e.Addr.Compare(o.Last) <= 0 {
			return true
		}
	}
	return false
}
