package ipam

import (
	"cmp"
	"maps"
	"math/bits"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/weftmesh/weft/peer"
	"pgregory.net/rapid"
)

const testSize = 1 << 12

// genTokens draws a token list over a small space of starts, owners and
// versions, so that generated rings collide often.
func genTokens(t *rapid.T, label string) []Token {
	m := map[uint32]Token{}
	n := rapid.IntRange(0, 12).Draw(t, label+"_n")
	for range n {
		s := uint32(rapid.IntRange(0, 15).Draw(t, label+"_s")) * (testSize / 16)
		tok := Token{
			Start:   s,
			Owner:   peer.ID(rapid.IntRange(1, 4).Draw(t, label+"_o")),
			Version: uint32(rapid.IntRange(1, 4).Draw(t, label+"_v")),
			Free:    uint32(rapid.IntRange(0, 3).Draw(t, label+"_f")),
		}
		if old, ok := m[s]; !ok || old.less(tok) {
			m[s] = tok
		}
	}
	var out []Token
	for _, tok := range m {
		out = append(out, tok)
	}
	slices.SortFunc(out, func(a, b Token) int { return int(a.Start) - int(b.Start) })
	return out
}

func join(x, y []Token) []Token {
	r := Ring{Size: testSize, Tokens: slices.Clone(x)}
	r.Merge(y)
	return r.Tokens
}

func TestMergeLaws(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a, b, c := genTokens(t, "a"), genTokens(t, "b"), genTokens(t, "c")
		if ab, ba := join(a, b), join(b, a); !slices.Equal(ab, ba) {
			t.Fatalf("merge not commutative:\n a∪b %v\n b∪a %v", ab, ba)
		}
		if l, r := join(join(a, b), c), join(a, join(b, c)); !slices.Equal(l, r) {
			t.Fatalf("merge not associative:\n (a∪b)∪c %v\n a∪(b∪c) %v", l, r)
		}
		if aa := join(a, a); !slices.Equal(aa, a) {
			t.Fatalf("merge not idempotent: %v -> %v", a, aa)
		}
		// Merge reports exactly the tokens that changed.
		r := Ring{Size: testSize, Tokens: slices.Clone(a)}
		changed := r.Merge(b)
		again := Ring{Size: testSize, Tokens: slices.Clone(a)}
		again.Merge(changed)
		if !slices.Equal(again.Tokens, r.Tokens) {
			t.Fatalf("changed tokens %v do not reproduce the merge", changed)
		}
	})
}

// TestMergeOneOwnerPerAddress: after merging, every address has exactly
// one owner, and the merge of any delivery order agrees.
func TestMergeOrderIndependent(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		msgs := make([][]Token, rapid.IntRange(1, 6).Draw(t, "msgs"))
		for i := range msgs {
			msgs[i] = genTokens(t, "m")
		}
		perm := rapid.Permutation(msgs).Draw(t, "perm")
		var x, y []Token
		for _, m := range msgs {
			x = join(x, m)
		}
		for _, m := range perm {
			y = join(y, m)
			y = join(y, m) // duplicate delivery
		}
		if !slices.Equal(x, y) {
			t.Fatalf("delivery order changed the ring:\n %v\n %v", x, y)
		}
	})
}

func TestDivide(t *testing.T) {
	for _, size := range []uint64{4, 64, 1 << 20} {
		for n := 1; n <= 70; n++ {
			ids := make([]peer.ID, n)
			for i := range ids {
				ids[i] = peer.ID(i + 1)
			}
			r := divide(size, ids, func(s, e uint64) uint32 { return uint32(e - s) })
			if !r.Ready() {
				t.Fatalf("divide(%d, %d peers) not ready", size, n)
			}
			again := divide(size, ids, func(s, e uint64) uint32 { return uint32(e - s) })
			if !slices.Equal(r.Tokens, again.Tokens) || r.Seed != again.Seed {
				t.Fatalf("divide(%d, %d) not deterministic", size, n)
			}
			blocks := min(uint64(1)<<bits.Len64(uint64(n-1))*4, size)
			var total uint64
			for i, tok := range r.Tokens {
				if uint64(tok.Start)%(size/blocks) != 0 {
					t.Fatalf("divide(%d, %d): token %d not aligned to %d", size, n, tok.Start, size/blocks)
				}
				total += r.end(i) - uint64(tok.Start)
			}
			if total != size {
				t.Fatalf("divide(%d, %d) covers %d", size, n, total)
			}
		}
	}
}

func TestCIDRs(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := rapid.Uint64Range(0, 1<<20).Draw(t, "s")
		e := rapid.Uint64Range(s, 1<<20).Draw(t, "e")
		cur := s
		for _, c := range cidrs(s, e) {
			if c[0] != cur || c[0]%(1<<c[1]) != 0 {
				t.Fatalf("cidrs(%d,%d): block %v at %d not aligned/contiguous", s, e, c, cur)
			}
			cur += 1 << c[1]
		}
		if cur != e {
			t.Fatalf("cidrs(%d,%d) ends at %d", s, e, cur)
		}
	})
}

// TestMergeInPlace: Merge, which writes into the ring where it is, leaves
// the ring and reports the changes as a model of the join does (per start,
// the token that wins by less; changed, b's tokens that are new or win),
// with or without spare capacity in the slice, and apply's undo puts the
// ring back as it was.
func TestMergeInPlace(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a, b := genTokens(t, "a"), genTokens(t, "b")
		byStart := map[uint32]Token{}
		for _, tok := range a {
			byStart[tok.Start] = tok
		}
		var wantChanged []Token
		for _, tok := range b {
			if old, ok := byStart[tok.Start]; !ok || old.less(tok) {
				byStart[tok.Start] = tok
				wantChanged = append(wantChanged, tok)
			}
		}
		want := slices.SortedFunc(maps.Values(byStart), func(x, y Token) int { return cmp.Compare(x.Start, y.Start) })
		got := Ring{Size: testSize, Tokens: slices.Grow(slices.Clone(a), rapid.IntRange(0, 8).Draw(t, "spare"))}
		changed := got.newer(b)
		undo := got.apply(changed)
		if !slices.Equal(got.Tokens, want) || !slices.Equal(changed, wantChanged) {
			t.Fatalf("%v ∪ %v\n = %v (changed %v)\nwant %v (changed %v)", a, b, got.Tokens, changed, want, wantChanged)
		}
		undo()
		if !slices.Equal(got.Tokens, a) {
			t.Fatalf("undo of %v ∪ %v: %v; want %v", a, b, got.Tokens, a)
		}
	})
}

// TestMergeDuplicateIsFree: a delta that changes nothing (dissemination
// brings each several times) is recognised without copying the ring or
// writing anything; one token in it that is new is merged.
func TestMergeDuplicateIsFree(t *testing.T) {
	const self, p2, p3 = peer.ID(1), peer.ID(2), peer.ID(3)
	a := slash24Allocator(t, self, false)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ring = Ring{Size: 256, Seed: 7, Tokens: []Token{{Start: 0, Owner: p2, Version: 3, Free: 10}, {Start: 64, Owner: self, Version: 1, Free: 64}, {Start: 128, Owner: p3, Version: 1, Free: 128}}}
	dup := &message{Kind: kindDelta, Range: a.cfg.Range, Seed: 7, Tokens: []Token{
		{Start: 0, Owner: p2, Version: 2, Free: 20},    // older than ours
		{Start: 128, Owner: p3, Version: 1, Free: 128}, // the same
	}}
	if n := testing.AllocsPerRun(100, func() {
		if changed, err := a.mergeTokensLocked(p2, dup); err != nil || len(changed) != 0 {
			t.Fatalf("duplicate: changed %v, %v; want nothing", changed, err)
		}
	}); n != 0 {
		t.Errorf("a duplicate delta allocated %v times; want 0 (no copy of the ring)", n)
	}
	for _, tok := range []Token{
		{Start: 128, Owner: p3, Version: 2, Free: 127}, // a free count: 3 allocated one
		{Start: 192, Owner: p2, Version: 1, Free: 64},  // a new token: 3 gave [192,256) to 2
	} {
		m := &message{Kind: kindDelta, Range: a.cfg.Range, Seed: 7, Tokens: append(slices.Clone(dup.Tokens), tok)}
		changed, err := a.mergeTokensLocked(p2, m)
		if err != nil || len(changed) != 1 || changed[0] != tok {
			t.Errorf("merge with %+v: changed %v, %v; want just it", tok, changed, err)
		}
	}
}

// TestMergeCostsTheDelta: merging a one-token delta into a large ring
// costs memory for the delta (and the store's pages), not copies of the
// ring, and the full state is not encoded until asked for. A mass join
// merges every new delta at every peer: at 2,000 peers, copies of a
// 4,000-token ring per merge made the simulator's join O(N³) in bytes.
func TestMergeCostsTheDelta(t *testing.T) {
	const self, p2 = peer.ID(1), peer.ID(2)
	a := testAllocator(t, self, "10.0.0.0/8", false)
	const n = 20000 // tokens: 320 KB as []Token, ~400 KB encoded
	a.mu.Lock()
	a.ring = Ring{Size: 1 << 24, Seed: 7}
	for i := range n {
		a.ring.Tokens = append(a.ring.Tokens, Token{Start: uint32(i) << 8, Owner: p2, Version: 1, Free: 256})
	}
	a.mu.Unlock()
	var before, after runtime.MemStats
	const merges = 20
	runtime.ReadMemStats(&before)
	for i := range merges {
		m := &message{Kind: kindDelta, Range: a.cfg.Range, Seed: 7, Tokens: []Token{{Start: uint32(i) << 8, Owner: p2, Version: 2, Free: 255}}}
		a.mu.Lock()
		changed, err := a.mergeTokensLocked(p2, m)
		a.mu.Unlock()
		if err != nil || len(changed) != 1 {
			t.Fatalf("merge %d: %v, %v", i, changed, err)
		}
	}
	runtime.ReadMemStats(&after)
	per := (after.TotalAlloc - before.TotalAlloc) / merges
	t.Logf("a one-token merge into %d tokens: %d bytes", n, per)
	if per > 64<<10 {
		t.Errorf("a one-token merge into %d tokens allocated %d bytes; want well under one copy of the ring (%d)", n, per, n*16)
	}
	if !a.stale.Load() {
		t.Error("the full state was built at the merges; want it built when asked")
	}
	m, err := decode(a.FullState())
	if a.stale.Load() {
		t.Error("still stale after FullState")
	}
	if err != nil || len(m.Tokens) != n || m.Tokens[merges-1].Version != 2 || m.Tokens[merges].Version != 1 {
		t.Fatalf("full state after the merges: %d tokens, %v", len(m.Tokens), err)
	}
}

// TestStateNeverBlocks: FullState and Summary do not wait for the
// allocator's lock (a commit holds it across its write): while it is held
// they return the last state built, after it is free the current one, and
// a commit builds them itself once they have lagged staleMax.
func TestStateNeverBlocks(t *testing.T) {
	const self, p2 = peer.ID(1), peer.ID(2)
	a := slash24Allocator(t, self, false)
	a.mu.Lock()
	locked := true
	defer func() { // before Close (t.Cleanup) takes the lock, even on a failure
		if locked {
			a.mu.Unlock()
		}
	}()
	a.ring = Ring{Size: 256, Seed: 7, Tokens: []Token{{Start: 0, Owner: p2, Version: 1, Free: 200}}}
	a.buildStateLocked()
	old, oldSum := a.built.Load().full, a.built.Load().summary
	merge := func(v uint32) {
		t.Helper()
		m := &message{Kind: kindDelta, Range: a.cfg.Range, Seed: 7, Tokens: []Token{{Start: 0, Owner: p2, Version: v, Free: 200 - v}}}
		if changed, err := a.mergeTokensLocked(p2, m); err != nil || len(changed) != 1 {
			t.Fatalf("merge v%d: %v, %v", v, changed, err)
		}
	}
	merge(2)
	got := make(chan [2][]byte)
	go func() { got <- [2][]byte{a.FullState(), a.Summary()} }()
	select {
	case g := <-got:
		if string(g[0]) != string(old) || string(g[1]) != string(oldSum) {
			t.Error("with the lock held: want the state last built")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("FullState/Summary blocked on the allocator's lock")
	}
	a.staleSince = time.Now().Add(-staleMax) // lagging long enough: the next commit builds
	merge(3)
	if a.stale.Load() {
		t.Error("a commit after staleMax: want the state built")
	}
	merge(4)
	a.mu.Unlock()
	locked = false
	m, err := decode(a.FullState())
	if err != nil || len(m.Tokens) != 1 || m.Tokens[0].Version != 4 || a.stale.Load() {
		t.Fatalf("lock free: full state %+v, %v, stale %v; want v4 built", m, err, a.stale.Load())
	}
	if string(a.Summary()) == string(oldSum) {
		t.Error("lock free: summary unchanged")
	}
}
