package ipam

import (
	"context"
	"fmt"
	"math/bits"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/peer"
	"pgregory.net/rapid"
)

// TestDonationBlock draws rings over a /24 (runs of any length at any
// start, some ours) and allocations in our runs, and checks the block
// donationLocked gives: one CIDR-aligned block inside one run of ours,
// with no allocated address in it, at least one allocatable address given
// and one kept, written at a version that wins, and sized from the
// largest free span: at most two thirds of it, and more than a sixth (a
// block of at least half that size fits any span's alignment).
func TestDonationBlock(t *testing.T) {
	const self, to = peer.ID(1), peer.ID(9)
	a := slash24Allocator(t, self, false)
	const size = 256
	rapid.Check(t, func(rt *rapid.T) {
		r := Ring{Size: size, Seed: 7}
		starts := rapid.SliceOfNDistinct(rapid.IntRange(1, size-1), 0, 6, rapid.ID[int]).Draw(rt, "starts")
		starts = append(starts, 0)
		slices.Sort(starts)
		for _, s := range starts {
			r.Tokens = append(r.Tokens, Token{
				Start:   uint32(s),
				Owner:   rapid.SampledFrom([]peer.ID{self, self, 2, 3}).Draw(rt, "owner"),
				Version: uint32(rapid.IntRange(1, 5).Draw(rt, "version")),
			})
		}
		allocs := map[string]uint32{}
		for i, t := range r.Tokens {
			for off := uint64(t.Start); off < r.end(i); off++ {
				if t.Owner == self && off != 0 && off != size-1 && rapid.IntRange(0, 9).Draw(rt, "used") < 3 {
					allocs[fmt.Sprint(off)] = uint32(off)
				}
			}
		}
		a.mu.Lock()
		a.ring, a.allocs = r, newAllocations(allocs, map[string]string{})
		give, ok := a.donationLocked(to)
		a.mu.Unlock()

		free := func(off uint64) bool {
			_, used := a.allocs.byOff[uint32(off)]
			return r.Owner(uint32(off)) == self && off != 0 && off != size-1 && !used
		}
		// The largest free span, counted in allocatable addresses.
		var longest uint64
		for i, t := range r.Tokens {
			var cur uint64
			for off := uint64(t.Start); off < r.end(i); off++ {
				if free(off) {
					cur++
					longest = max(longest, cur)
				} else {
					cur = 0
				}
			}
		}
		if !ok {
			if longest >= 2 {
				rt.Fatalf("no donation with a free span of %d (ring %v, allocations %v)", longest, r.Tokens, allocs)
			}
			return
		}
		if longest < 2 {
			rt.Fatalf("donation %v with no free span of 2 or more", give)
		}
		if give[0].Owner != to || (len(give) == 2 && give[1].Owner != self) || len(give) > 2 {
			rt.Fatalf("donation tokens %v; want one for %s, then at most one of ours", give, to)
		}
		ti := r.index(give[0].Start)
		if r.Tokens[ti].Owner != self {
			rt.Fatalf("donation %v inside a run of %s", give, r.Tokens[ti].Owner)
		}
		cs, ce := uint64(give[0].Start), r.end(ti)
		if len(give) == 2 {
			ce = uint64(give[1].Start)
		}
		if ce > r.end(ti) || ce <= cs {
			rt.Fatalf("donated block [%d, %d) leaves its run [%d, %d)", cs, ce, r.Tokens[ti].Start, r.end(ti))
		}
		sz := ce - cs
		if bits.OnesCount64(sz) != 1 || cs%sz != 0 {
			rt.Fatalf("donated block [%d, %d) is not CIDR-aligned", cs, ce)
		}
		given := 0
		for off := cs; off < ce; off++ {
			if _, used := a.allocs.byOff[uint32(off)]; used {
				rt.Fatalf("donated block [%d, %d) holds allocated offset %d", cs, ce, off)
			}
			if off != 0 && off != size-1 {
				given++
			}
		}
		if given == 0 || uint32(given) != give[0].Free {
			rt.Fatalf("donated block [%d, %d): %d allocatable, token says %d free", cs, ce, given, give[0].Free)
		}
		for _, g := range give {
			if i := r.index(g.Start); i >= 0 && r.Tokens[i].Start == g.Start && !r.Tokens[i].less(g) {
				rt.Fatalf("donation token %v does not win over %v", g, r.Tokens[i])
			}
		}
		// The span's reserved edges may be in the block, so compare with
		// up to two more addresses than the allocatable count.
		if 3*sz > 2*(longest+2) || 6*sz <= longest {
			rt.Fatalf("donated %d addresses of a largest free span of %d", sz, longest)
		}
		kept := 0
		for off := uint64(0); off < size; off++ {
			if free(off) && (off < cs || off >= ce) {
				kept++
			}
		}
		if kept == 0 {
			rt.Fatalf("donation [%d, %d) leaves the donor no free address", cs, ce)
		}
	})
}

func TestCapacity(t *testing.T) {
	a := &Allocator{ring: Ring{Size: 16}}
	for _, tc := range []struct {
		name string
		s, e uint64
		want uint32
	}{
		{"whole range", 0, 16, 14},
		{"first address only", 0, 1, 0},
		{"last address only", 15, 16, 0},
		{"first two", 0, 2, 1},
		{"last two", 14, 16, 1},
		{"middle", 4, 8, 4},
		{"lower half", 0, 8, 7},
		{"upper half", 8, 16, 7},
	} {
		if got := a.capacity(tc.s, tc.e); got != tc.want {
			t.Errorf("%s: capacity(%d, %d) = %d; want %d", tc.name, tc.s, tc.e, got, tc.want)
		}
	}
}

// TestDonationHeld: a donation request from a peer the membership does
// not know yet is answered as soon as SetPeers brings the peer up, not
// dropped (its requester would wait a RequestTimeout); one held longer
// than RequestTimeout is dropped (the requester has asked again); the
// number held is bounded.
func TestDonationHeld(t *testing.T) {
	a := soloAllocator(t)
	sent := func() []outMsg {
		var out []outMsg
		for {
			select {
			case m := <-a.out:
				out = append(out, m)
			default:
				return out
			}
		}
	}
	request := func(from peer.ID, id uint64) { t.Helper(); requestSpace(t, a, from, id) }
	sent()
	const b, c = peer.ID(0xb), peer.ID(0xc)
	request(b, 42)
	if out := sent(); len(out) != 0 {
		t.Fatalf("answered a peer not known yet: %d messages", len(out))
	}
	a.SetPeers([]peer.Info{{ID: b, State: peer.Alive}})
	// SetPeers never commits (it runs in the daemon's sync loop): it
	// signals Run's goroutine, which answers.
	if out := sent(); len(out) != 0 {
		t.Fatalf("SetPeers answered itself: %d messages", len(out))
	}
	select {
	case <-a.heldUp:
	default:
		t.Fatal("SetPeers did not signal the held request's peer up")
	}
	a.answerHeld()
	out := sent()
	var reply *message
	for _, o := range out {
		if m, err := decode(o.msg); err == nil && o.to == b && m.Kind == kindDonateReply {
			reply = m
		}
	}
	if reply == nil || reply.ReqID != 42 || reply.Flags&flagOK == 0 || len(reply.Tokens) == 0 {
		t.Fatalf("no donation to b once it was known: %d messages, reply %+v", len(out), reply)
	}
	if len(a.Ranges()[b]) == 0 {
		t.Fatalf("b owns nothing after the donation: %v", a.Ranges())
	}
	a.SetPeers([]peer.Info{{ID: b, State: peer.Alive}})
	select {
	case <-a.heldUp:
		t.Fatal("SetPeers signalled with nothing held")
	default:
	}
	a.answerHeld()
	if out := sent(); len(out) != 0 {
		t.Fatalf("a held request answered twice: %d messages", len(out))
	}

	// Held past RequestTimeout: dropped, not answered.
	request(c, 43)
	a.mu.Lock()
	h := a.held[c]
	h.at = h.at.Add(-a.cfg.RequestTimeout)
	a.held[c] = h
	a.mu.Unlock()
	a.SetPeers([]peer.Info{{ID: b, State: peer.Alive}, {ID: c, State: peer.Alive}})
	select {
	case <-a.heldUp:
	default:
		t.Fatal("SetPeers did not signal c up")
	}
	a.answerHeld()
	if out := sent(); len(out) != 0 || len(a.Ranges()[c]) != 0 {
		t.Fatalf("a request held past RequestTimeout was answered: %d messages, c owns %v", len(out), a.Ranges()[c])
	}
	a.mu.Lock()
	n := len(a.held)
	a.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d requests still held; want none", n)
	}

	// Held past RequestTimeout by a peer that never comes up: dropped too
	// (stale requests must not fill maxHeld).
	const e = peer.ID(0xe)
	request(e, 45)
	a.mu.Lock()
	h = a.held[e]
	h.at = h.at.Add(-a.cfg.RequestTimeout)
	a.held[e] = h
	a.mu.Unlock()
	a.SetPeers([]peer.Info{{ID: b, State: peer.Alive}})
	select {
	case <-a.heldUp:
	default:
		t.Fatal("SetPeers did not signal a stale held request")
	}
	a.answerHeld()
	a.mu.Lock()
	_, kept := a.held[e]
	a.mu.Unlock()
	if kept {
		t.Fatal("a stale request of a peer that never came up is still held")
	}

	// Through Run: SetPeers's signal is answered by Run's goroutine.
	const d = peer.ID(0xd)
	request(d, 44)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { a.Run(ctx); close(ran) }()
	t.Cleanup(func() { cancel(); <-ran })
	a.SetPeers([]peer.Info{{ID: b, State: peer.Alive}, {ID: d, State: peer.Alive}})
	for deadline := time.Now().Add(30 * time.Second); len(a.Ranges()[d]) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("Run did not answer d's held request after SetPeers brought d up")
		}
	}

	// Bounded: requests from more unknown peers than maxHeld keep maxHeld.
	for i := range maxHeld + 10 {
		request(peer.ID(0x1000+i), uint64(i))
	}
	a.mu.Lock()
	n = len(a.held)
	a.mu.Unlock()
	if n != maxHeld {
		t.Fatalf("%d requests held; want the bound %d", n, maxHeld)
	}

}

// TestMergeSyncsOnlyOurSpace: a merge is synced to disk only when it
// changes our own space (a token given to us, or one cutting into a run
// of ours); a donation between two other peers, or their free counts, is
// written without a sync (gossip brings it again after a crash).
func TestMergeSyncsOnlyOurSpace(t *testing.T) {
	const self, p2, p3 = peer.ID(1), peer.ID(2), peer.ID(3)
	a := slash24Allocator(t, self, true)
	merge := func(toks ...Token) {
		t.Helper()
		m := &message{Kind: kindDelta, Range: a.cfg.Range, Seed: 7, Tokens: toks}
		if err := a.Merge(p2, m.encode()); err != nil {
			t.Fatal(err)
		}
	}
	// The ring: 2 owns [0,64), we own [64,128), 3 owns [128,256).
	a.mu.Lock()
	a.ring = Ring{Size: 256, Seed: 7, Tokens: []Token{{Start: 0, Owner: p2, Version: 1}, {Start: 64, Owner: self, Version: 1}, {Start: 128, Owner: p3, Version: 1}}}
	a.mu.Unlock()
	steps := []struct {
		what string
		toks []Token
		sync bool
	}{
		{"3 gives [192,256) to 2", []Token{{Start: 128, Owner: p3, Version: 2, Free: 60}, {Start: 192, Owner: p2, Version: 1, Free: 64}}, false},
		{"2's free count", []Token{{Start: 0, Owner: p2, Version: 2, Free: 10}}, false},
		{"2 gives [32,64) to us", []Token{{Start: 0, Owner: p2, Version: 3, Free: 5}, {Start: 32, Owner: self, Version: 1, Free: 32}}, true},
		{"a token written into our run [64,128) for 3 (a reclaim)", []Token{{Start: 96, Owner: p3, Version: 1, Free: 32}}, true},
	}
	for _, s := range steps {
		before := a.Syncs()
		merge(s.toks...)
		if got := a.Syncs() > before; got != s.sync {
			t.Errorf("%s: synced %v; want %v", s.what, got, s.sync)
		}
	}
}

// slash24Allocator is an allocator of 10.9.8.0/24 with no ring yet, on a
// store in the test's directory (synced to disk if sync), closed at the
// end of the test.
func slash24Allocator(t *testing.T, self peer.ID, sync bool) *Allocator {
	t.Helper()
	return testAllocator(t, self, "10.9.8.0/24", sync)
}

// testAllocator is an allocator of rng with no ring yet, on a store in the
// test's directory (synced to disk if sync), closed at the end of the test.
func testAllocator(t *testing.T, self peer.ID, rng string, sync bool) *Allocator {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Range = netip.MustParsePrefix(rng)
	cfg.Self = self
	cfg.NoSync = !sync
	cfg.DBPath = filepath.Join(t.TempDir(), "ipam.db")
	a, err := New(cfg, &recorder{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// TestPickDonorSpreadsOverLargestShares: the donor is picked at random
// among the live peers with the largest share, whose free counts differ
// by their allocations (a mass join sends every asker to one donor
// otherwise); a peer with half that share, one refused, one down and this
// peer itself are never picked.
func TestPickDonorSpreadsOverLargestShares(t *testing.T) {
	const self, big1, big2, big3, half, refused, down = peer.ID(1), peer.ID(2), peer.ID(3), peer.ID(4), peer.ID(5), peer.ID(6), peer.ID(7)
	a := slash24Allocator(t, self, false)
	a.mu.Lock()
	defer a.mu.Unlock()
	// Shares of 64, 64, 64 with 63, 61 and 58 free; 32 with 32 free; we
	// hold 64 with all free; a refused and a down peer hold 64 each.
	a.ring = Ring{Size: 1024, Seed: 7, Tokens: []Token{
		{Start: 0, Owner: big1, Version: 1, Free: 63},
		{Start: 64, Owner: big2, Version: 1, Free: 61},
		{Start: 128, Owner: big3, Version: 1, Free: 58},
		{Start: 192, Owner: half, Version: 1, Free: 32},
		{Start: 224, Owner: self, Version: 1, Free: 64},
		{Start: 288, Owner: refused, Version: 1, Free: 64},
		{Start: 352, Owner: down, Version: 1, Free: 64},
	}}
	a.peers = map[peer.ID]member{}
	for _, id := range []peer.ID{big1, big2, big3, half, refused} {
		a.peers[id] = member{state: peer.Alive}
	}
	a.peers[down] = member{state: peer.Dead}
	picked := map[peer.ID]int{}
	for range 600 {
		picked[a.pickDonorLocked(map[peer.ID]bool{refused: true})]++
	}
	for _, id := range []peer.ID{big1, big2, big3} {
		if picked[id] < 100 {
			t.Errorf("peer %v with a largest share picked %d times in 600; want about 200 (all: %v)", id, picked[id], picked)
		}
	}
	if n := picked[big1] + picked[big2] + picked[big3]; n != 600 {
		t.Errorf("picked others than the largest shares: %v", picked)
	}
	// Refusals narrow the choice; with every largest share refused the
	// half share is the largest left.
	if got := a.pickDonorLocked(map[peer.ID]bool{refused: true, big1: true, big2: true, big3: true}); got != half {
		t.Errorf("largest shares refused: picked %v; want %v", got, half)
	}
}

// TestDonationReachable: with Config.Reachable, a request from a peer the
// mesh knows but SetPeers has not brought yet is answered at once, and
// one from a peer the mesh does not know yet is held and answered by
// Run's goroutine as soon as the mesh knows it, without a SetPeers (a
// mass join's requesters waited for the daemon's next sync pass, past
// their RequestTimeout).
func TestDonationReachable(t *testing.T) {
	a := soloAllocator(t)
	var mu sync.Mutex
	reach := map[peer.ID]bool{}
	asked := map[peer.ID]int{}
	a.mu.Lock()
	a.cfg.Reachable = func(id peer.ID) bool {
		mu.Lock()
		defer mu.Unlock()
		asked[id]++
		return reach[id]
	}
	a.mu.Unlock()
	request := func(from peer.ID, id uint64) { t.Helper(); requestSpace(t, a, from, id) }
	const b, c = peer.ID(0xb), peer.ID(0xc)
	mu.Lock()
	reach[b] = true
	mu.Unlock()
	request(b, 1)
	if len(a.Ranges()[b]) == 0 {
		t.Fatalf("a peer the mesh knows was not given space at once: %v", a.Ranges())
	}

	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { a.Run(ctx); close(ran) }()
	t.Cleanup(func() { cancel(); <-ran })
	request(c, 2)
	a.mu.Lock()
	_, held := a.held[c]
	a.mu.Unlock()
	if !held || len(a.Ranges()[c]) != 0 {
		t.Fatalf("a peer nobody knows: held %v, owns %v; want held, nothing", held, a.Ranges()[c])
	}
	// Once Run's goroutine has looked again (and kept it held), the mesh
	// learns c.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		n := asked[c]
		mu.Unlock()
		if n >= 2 { // the request's own look, and one of Run's
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Run's goroutine never looked at the held request again")
		}
	}
	mu.Lock()
	reach[c] = true
	mu.Unlock()
	for deadline := time.Now().Add(30 * time.Second); len(a.Ranges()[c]) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("Run did not answer c's held request once the mesh knew c")
		}
	}
}

// requestSpace delivers a donation request from peer from, numbered id, to a.
func requestSpace(t *testing.T, a *Allocator, from peer.ID, id uint64) {
	t.Helper()
	a.mu.Lock()
	m := &message{Kind: kindDonateReq, ReqID: id, Range: a.cfg.Range, Seed: a.ring.Seed}
	a.mu.Unlock()
	if err := a.Merge(from, m.encode()); err != nil {
		t.Fatal(err)
	}
}

// TestQueryRingAsksAFew: a peer waiting for a ring asks ringQueryFanout
// distinct random live peers a round (ballot-0 Prepares), never itself or
// a down peer, and over rounds every live peer gets asked; with fewer live
// peers than that, all of them.
func TestQueryRingAsksAFew(t *testing.T) {
	const self = peer.ID(1)
	a := slash24Allocator(t, self, false)
	asked := func() []peer.ID {
		a.queryRing()
		var got []peer.ID
		for _, s := range takeSent(t, a) {
			if d := s.m; d.Kind != kindPrepare || d.Key != bootstrapKey || d.Ballot != (ballot{P: self}) {
				t.Fatalf("ring query to %s: kind %d key %+v ballot %+v; want a ballot-0 bootstrap Prepare", s.to, d.Kind, d.Key, d.Ballot)
			}
			got = append(got, s.to)
		}
		slices.Sort(got)
		return got
	}
	const down = peer.ID(99)
	a.mu.Lock()
	a.peers = map[peer.ID]member{down: {state: peer.Dead}, 2: {state: peer.Alive}, 3: {state: peer.Alive}}
	a.mu.Unlock()
	if got := asked(); !slices.Equal(got, []peer.ID{2, 3}) {
		t.Fatalf("two live peers: asked %v; want both", got)
	}

	a.mu.Lock()
	for id := peer.ID(2); id < 32; id++ {
		a.peers[id] = member{state: peer.Alive}
	}
	a.mu.Unlock()
	seen := map[peer.ID]int{}
	for range 200 {
		got := asked()
		if len(got) != ringQueryFanout || len(slices.Compact(slices.Clone(got))) != ringQueryFanout {
			t.Fatalf("30 live peers: asked %v; want %d distinct", got, ringQueryFanout)
		}
		for _, id := range got {
			if id == self || id == down {
				t.Fatalf("asked %s", id)
			}
			seen[id]++
		}
	}
	if len(seen) != 30 {
		t.Errorf("200 rounds asked %d of the 30 live peers; want all", len(seen))
	}
}

// TestRingQueryAnsweredWithTheRing: a peer with a ring answers a ring
// query (a ballot-0 Prepare) with its ring alone, and a proposer's Prepare
// with its ring and a Nack saying it has one (the proposer's round stops).
func TestRingQueryAnsweredWithTheRing(t *testing.T) {
	const self, asker = peer.ID(1), peer.ID(2)
	a := slash24Allocator(t, self, false)
	a.mu.Lock()
	a.ring = Ring{Size: 256, Seed: 7, Tokens: []Token{{Start: 0, Owner: self, Version: 1}}}
	a.peers = map[peer.ID]member{asker: {state: peer.Alive}}
	a.mu.Unlock()
	answers := func(n uint32) []kind {
		m := &message{Kind: kindPrepare, Key: bootstrapKey, Ballot: ballot{N: n, P: asker}, Range: a.cfg.Range}
		if err := a.Merge(asker, m.encode()); err != nil {
			t.Fatal(err)
		}
		var got []kind
		for _, o := range takeSent(t, a) {
			if o.to != asker {
				t.Fatalf("answer sent to %s; want %s", o.to, asker)
			}
			got = append(got, o.m.Kind)
		}
		return got
	}
	if got := answers(0); !slices.Equal(got, []kind{kindFull}) {
		t.Errorf("ring query answered with kinds %v; want the ring alone (%d)", got, kindFull)
	}
	if got := answers(1); !slices.Equal(got, []kind{kindFull, kindNack}) {
		t.Errorf("proposer's Prepare answered with kinds %v; want the ring and a Nack (%d, %d)", got, kindFull, kindNack)
	}
}

// sent is a unicast the allocator queued.
type sent struct {
	to peer.ID
	m  *message
}

// takeSent returns, decoded, the unicasts a queued (no Run takes them).
func takeSent(t *testing.T, a *Allocator) []sent {
	t.Helper()
	var out []sent
	for {
		select {
		case o := <-a.out:
			m, err := decode(o.msg)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, sent{to: o.to, m: m})
		default:
			return out
		}
	}
}
