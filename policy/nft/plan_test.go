package nft_test

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"

	"github.com/weftmesh/weft/policy"
	"github.com/weftmesh/weft/policy/nft"
	"github.com/weftmesh/weft/policy/nft/nfttest"
)

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// program builds a small program by hand: one isolated pod.
func program(podIP string, allowFrom ...string) *policy.Program {
	ip := addr(podIP)
	chain := policy.PodChain(policy.Ingress, ip)
	peers := &policy.Set{Name: "x/allow/in0/pods", Kind: policy.AddrSet}
	for _, a := range allowFrom {
		peers.Elems = append(peers.Elems, policy.Elem{Addr: addr(a)})
	}
	return &policy.Program{
		Table: "weft-policy",
		Sets: []*policy.Set{
			{Name: policy.MapEgress, Kind: policy.VerdictMap},
			{Name: policy.MapIngress, Kind: policy.VerdictMap, Elems: []policy.Elem{{Addr: ip, Chain: chain}}},
			peers,
		},
		Chains: []*policy.Chain{
			{Name: policy.ChainForward, Hook: policy.HookForward, Rules: []policy.ChainRule{
				{Action: policy.Action{Kind: policy.Dispatch, Map: policy.MapIngress, Field: policy.Daddr}}}},
			{Name: chain, Rules: []policy.ChainRule{
				{Match: []policy.Match{{Kind: policy.MatchAddrIn, Field: policy.Saddr, Set: peers.Name}}, Action: policy.Action{Kind: policy.Accept}},
				{Counter: true, Action: policy.Action{Kind: policy.Drop}},
			}},
		},
	}
}

// TestApplyTranscript: the transcript of a first apply, of the same
// program again (nothing), of a change of set elements only, of a
// moved pod (chain replaced), and of a failed batch (the next Apply reads
// the kernel and retries the whole difference).
func TestApplyTranscript(t *testing.T) {
	k := nfttest.NewConn()
	a := nft.NewApplier(k)
	steps := []struct {
		name string
		prog *policy.Program
		want []string
	}{
		{"create", program("10.32.0.5", "10.32.0.7"), []string{
			"add table",
			"add map egress",
			"add map ingress",
			"add set x/allow/in0/pods",
			"add chain forward { hook forward }",
			"add chain ingress-10.32.0.5",
			"add element x/allow/in0/pods { 10.32.0.7 }",
			"add rule forward ip daddr vmap @ingress",
			"add rule ingress-10.32.0.5 ip saddr @x/allow/in0/pods accept",
			"add rule ingress-10.32.0.5 counter drop",
			"add element ingress { 10.32.0.5 : jump ingress-10.32.0.5 }",
		}},
		{"same again", program("10.32.0.5", "10.32.0.7"), nil},
		{"a peer more, one less", program("10.32.0.5", "10.32.0.8", "10.32.0.9"), []string{
			"delete element x/allow/in0/pods { 10.32.0.7 }",
			"add element x/allow/in0/pods { 10.32.0.8, 10.32.0.9 }",
		}},
		{"the pod's address changed", program("10.32.0.6", "10.32.0.8", "10.32.0.9"), []string{
			"add chain ingress-10.32.0.6",
			"add rule ingress-10.32.0.6 ip saddr @x/allow/in0/pods accept",
			"add rule ingress-10.32.0.6 counter drop",
			"delete element ingress { 10.32.0.5 : jump ingress-10.32.0.5 }",
			"add element ingress { 10.32.0.6 : jump ingress-10.32.0.6 }",
			"flush chain ingress-10.32.0.5",
			"delete chain ingress-10.32.0.5",
		}},
	}
	for _, s := range steps {
		lines, err := a.Apply(s.prog)
		if err != nil {
			t.Fatalf("%s: Apply: %v", s.name, err)
		}
		if got := k.Take(); !slices.Equal(got, s.want) || !slices.Equal(lines, s.want) {
			t.Errorf("%s: transcript\n%s\nwant\n%s", s.name, strings.Join(got, "\n"), strings.Join(s.want, "\n"))
		}
	}

	boom := errors.New("boom")
	k.Fail(boom)
	if _, err := a.Apply(program("10.32.0.6", "10.32.0.8")); !errors.Is(err, boom) {
		t.Fatalf("Apply with a failing kernel = %v; want %v", err, boom)
	}
	k.Fail(nil)
	if _, err := a.Apply(program("10.32.0.6", "10.32.0.8")); err != nil {
		t.Fatalf("Apply after the failure: %v", err)
	}
	if got, want := k.Take(), []string{"delete element x/allow/in0/pods { 10.32.0.9 }"}; !slices.Equal(got, want) {
		t.Errorf("Apply after a failure = %q; want %q", got, want)
	}

	if err := a.Delete("weft-policy"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if got := k.Take(); !slices.Equal(got, []string{"delete table"}) {
		t.Errorf("Delete = %q", got)
	}
}

// TestPlanSequences: any sequence of programs applies without an
// operation the kernel refuses (the fake checks each), leaves exactly the
// last program, and applying it again changes nothing, from the cache as
// from a fresh read.
func TestPlanSequences(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		k := nfttest.NewConn()
		a := nft.NewApplier(k)
		for i := range rapid.IntRange(1, 6).Draw(t, "programs") {
			p := genProgram(t)
			if _, err := a.Apply(p); err != nil {
				t.Fatalf("program %d: Apply: %v\n%v", i, err, p)
			}
			have, _ := k.Read(p.Table)
			if d := nft.StateOf(p).Diff(have); d != "" {
				t.Fatalf("program %d: kernel differs: %s", i, d)
			}
			k.Take()
			if lines, err := a.Apply(p); err != nil || len(lines) > 0 {
				t.Fatalf("program %d again = %q, %v; want no change", i, lines, err)
			}
			if lines, err := nft.NewApplier(k).Apply(p); err != nil || len(lines) > 0 {
				t.Fatalf("program %d again, read from the kernel = %q, %v; want no change", i, lines, err)
			}
		}
	})
}

// genProgram draws a program from small pools of names, so that
// consecutive programs share and differ in sets, elements and chains.
func genProgram(t *rapid.T) *policy.Program {
	p := &policy.Program{Table: "t"}
	kinds := []policy.SetKind{policy.AddrSet, policy.RangeSet, policy.AddrPortSet}
	for i := range 4 {
		if !rapid.Bool().Draw(t, "set") {
			continue
		}
		name := fmt.Sprintf("s%d", i)
		kind := kinds[i%3]
		if rapid.IntRange(0, 9).Draw(t, "other-kind") == 0 {
			kind = kinds[(i+1)%3] // someone else's set of that name: a rebuild
		}
		s := &policy.Set{Name: name, Kind: kind}
		switch kind {
		case policy.RangeSet:
			for j := range 4 {
				if rapid.Bool().Draw(t, "range") {
					lo := netip.AddrFrom4([4]byte{10, byte(j), 0, 0})
					hi := netip.AddrFrom4([4]byte{10, byte(j), byte(rapid.IntRange(0, 255).Draw(t, "hi")), 255})
					s.Elems = append(s.Elems, policy.Elem{Addr: lo, Last: hi})
				}
			}
			if rapid.Bool().Draw(t, "to-the-end") {
				s.Elems = append(s.Elems, policy.Elem{Addr: addr("200.0.0.0"), Last: addr("255.255.255.255")})
			}
		default:
			for j := range 5 {
				if rapid.Bool().Draw(t, "elem") {
					e := policy.Elem{Addr: netip.AddrFrom4([4]byte{10, 32, 0, byte(j)})}
					if kind == policy.AddrPortSet {
						e.Port = uint16(rapid.SampledFrom([]int{80, 81}).Draw(t, "port"))
					}
					s.Elems = append(s.Elems, e)
				}
			}
		}
		p.Sets = append(p.Sets, s)
	}
	vm := &policy.Set{Name: policy.MapIngress, Kind: policy.VerdictMap}
	var chains []*policy.Chain
	for i := range 4 {
		if !rapid.Bool().Draw(t, "chain") {
			continue
		}
		ip := netip.AddrFrom4([4]byte{10, 32, 0, byte(i)})
		c := &policy.Chain{Name: policy.PodChain(policy.Ingress, ip)}
		for range rapid.IntRange(0, 3).Draw(t, "rules") {
			r := policy.ChainRule{Action: policy.Action{Kind: policy.Accept}}
			if len(p.Sets) > 0 && rapid.Bool().Draw(t, "uses-set") {
				s := rapid.SampledFrom(p.Sets).Draw(t, "rule-set")
				if s.Kind == policy.AddrPortSet {
					r.Match = append(r.Match, policy.Match{Kind: policy.MatchAddrPortIn, Set: s.Name})
				} else {
					r.Match = append(r.Match, policy.Match{Kind: policy.MatchAddrIn, Set: s.Name})
				}
			}
			r.Match = append(r.Match, policy.Match{Kind: policy.MatchPorts, Lo: 80, Hi: uint16(rapid.IntRange(80, 82).Draw(t, "hi-port"))})
			c.Rules = append(c.Rules, r)
		}
		c.Rules = append(c.Rules, policy.ChainRule{Counter: true, Action: policy.Action{Kind: policy.Drop}})
		chains = append(chains, c)
		if rapid.IntRange(0, 3).Draw(t, "in-map") > 0 {
			vm.Elems = append(vm.Elems, policy.Elem{Addr: ip, Chain: c.Name})
		}
	}
	p.Sets = append(p.Sets, vm)
	slices.SortFunc(p.Sets, func(a, b *policy.Set) int { return strings.Compare(a.Name, b.Name) })
	hook := policy.HookForward
	if rapid.IntRange(0, 9).Draw(t, "other-hook") == 0 {
		hook = policy.HookInput // someone else's chain of that name: a rebuild
	}
	p.Chains = append([]*policy.Chain{{Name: policy.ChainForward, Hook: hook, Rules: []policy.ChainRule{
		{Action: policy.Action{Kind: policy.Dispatch, Map: policy.MapIngress, Field: policy.Daddr}}}}}, chains...)
	return p
}
