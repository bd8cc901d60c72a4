package ipam

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/weftmesh/weft/peer"
)

func fuzzSeeds() [][]byte {
	rng := netip.MustParsePrefix("10.32.0.0/12")
	full := message{Kind: kindFull, Range: rng, Seed: 7, Tokens: []Token{{0, 1, 1, 100}, {1 << 19, 2, 3, 5}}}
	delta := message{Kind: kindDelta, Range: rng, Seed: 7, Tokens: []Token{{1 << 19, 2, 4, 4}}}
	prep := message{Kind: kindPrepare, Range: rng, Key: instanceKey{Kind: instReclaim, Dead: 3, Hash: 9}, Ballot: ballot{2, 1}}
	acc := message{Kind: kindAccept, Range: rng, Key: bootstrapKey, Ballot: ballot{2, 1}, Value: []peer.ID{1, 2, 3}}
	seeds := [][]byte{full.encode(), delta.encode(), prep.encode(), acc.encode(), nil, []byte("W\x01"), bytes.Repeat([]byte{0xff}, 80)}
	bad := delta.encode()
	bad[len(bad)-20] = 0xff // token start out of range
	return append(seeds, bad)
}

// FuzzDecode: the decoder never panics, and whatever it accepts re-encodes
// to the same bytes and satisfies the ring invariants.
func FuzzDecode(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decode(b)
		if err != nil {
			return
		}
		if got := m.encode(); !bytes.Equal(got, b) {
			t.Fatalf("re-encode differs:\n in  %x\n out %x", b, got)
		}
		size := uint64(1) << (32 - m.Range.Bits())
		for i, tok := range m.Tokens {
			if uint64(tok.Start) >= size || (i > 0 && tok.Start <= m.Tokens[i-1].Start) || tok.Owner == 0 {
				t.Fatalf("decoder accepted bad token %d: %+v", i, tok)
			}
		}
		m2, err := decode(m.encode())
		if err != nil {
			t.Fatalf("decode(encode(m)) = %v", err)
		}
		if diff := cmp.Diff(m, m2, cmp.Comparer(func(x, y netip.Prefix) bool { return x == y })); diff != "" {
			t.Fatalf("round trip (-first +second):\n%s", diff)
		}
	})
}

// FuzzMerge feeds arbitrary messages to a bootstrapped allocator holding
// allocations: Merge never panics, and a rejected message changes nothing.
func FuzzMerge(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	a := soloAllocatorTB(f)
	own := (&message{Kind: kindDelta, Range: a.cfg.Range, Seed: a.ring.Seed,
		Tokens: []Token{{Start: 0, Owner: 2, Version: 1000}}}).encode()
	f.Add(own)
	f.Fuzz(func(t *testing.T, b []byte) {
		before := a.FullState()
		allocs := a.Status().Allocations
		if err := a.Merge(2, b); err != nil {
			if !bytes.Equal(before, a.FullState()) {
				t.Fatalf("rejected message (%v) changed the ring", err)
			}
		}
		if got := a.Status().Allocations; len(got) != len(allocs) {
			t.Fatalf("Merge changed the allocations")
		}
		for _, al := range allocs {
			off := uint32(al.Addr.Addr().As4()[3]) | uint32(al.Addr.Addr().As4()[2])<<8 | uint32(al.Addr.Addr().As4()[1]&0x0f)<<16
			if o := a.ring.Owner(off); o != a.cfg.Self {
				t.Fatalf("allocation %s now in %s's space", al.Addr, o)
			}
		}
	})
}
