package ipam

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/weftmesh/weft/peer"
)

// recorder is a Transport that keeps what it is given.
type recorder struct {
	mu         sync.Mutex // guards following
	broadcasts [][]byte
}

func (r *recorder) Broadcast(msg []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.broadcasts = append(r.broadcasts, msg)
}

func (r *recorder) SendTo(context.Context, peer.ID, []byte) error { return errors.New("no peers") }

var _ Transport = (*recorder)(nil)

// soloAllocator returns a bootstrapped single-peer allocator (consensus=1)
// holding a few allocations in the first half of the range.
func soloAllocator(t *testing.T) *Allocator { return soloAllocatorTB(t) }

func soloAllocatorTB(t testing.TB) *Allocator {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Self = 0xa
	cfg.DBPath = filepath.Join(t.TempDir(), "ipam.db")
	cfg.NoSync = true
	a, err := New(cfg, &recorder{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	a.tryConsensus(context.Background())
	if !a.ring.Ready() {
		t.Fatalf("solo peer did not bootstrap: %s", a.Status().Status)
	}
	for _, id := range []string{"c1", "c2", "c3"} {
		if _, err := a.Allocate(context.Background(), id); err != nil {
			t.Fatalf("Allocate(%q) = %v", id, err)
		}
	}
	return a
}

func TestMergeRejectsHostileInput(t *testing.T) {
	a := soloAllocator(t)
	rng, seed := a.cfg.Range, a.ring.Seed
	own := a.ring.Tokens[0]
	const size = 1 << 20
	enc := func(m message) []byte { return m.encode() }
	raw := func(k kind, toks ...[4]uint64) []byte {
		// Tokens encoded by hand, so that the encoder's help is not needed
		// to build bad lists.
		m := message{Kind: k, Range: rng, Seed: seed}
		b := m.encode()
		b = b[:len(b)-4]
		b = binary.BigEndian.AppendUint32(b, uint32(len(toks)))
		for _, tk := range toks {
			b = binary.BigEndian.AppendUint32(b, uint32(tk[0]))
			b = binary.BigEndian.AppendUint64(b, tk[1])
			b = binary.BigEndian.AppendUint32(b, uint32(tk[2]))
			b = binary.BigEndian.AppendUint32(b, uint32(tk[3]))
		}
		return b
	}
	tests := []struct {
		name string
		msg  []byte
		want error
	}{
		{"truncated", enc(message{Kind: kindDelta, Range: rng, Seed: seed})[:20], ErrBadMessage},
		{"overlapping tokens", raw(kindDelta, [4]uint64{8, 2, 9, 0}, [4]uint64{8, 3, 9, 0}), ErrBadMessage},
		{"unsorted tokens", raw(kindDelta, [4]uint64{16, 2, 9, 0}, [4]uint64{8, 3, 9, 0}), ErrBadMessage},
		{"token out of range", raw(kindDelta, [4]uint64{size, 2, 9, 0}), ErrBadMessage},
		{"token without owner", raw(kindDelta, [4]uint64{8, 0, 9, 0}), ErrBadMessage},
		{"full ring not at 0", raw(kindFull, [4]uint64{8, 2, 9, 0}), ErrBadMessage},
		{"other range", enc(message{Kind: kindDelta, Range: netip.MustParsePrefix("10.96.0.0/12"), Seed: seed,
			Tokens: []Token{{Start: 0, Owner: 2, Version: 99}}}), ErrDifferentRing},
		{"other ring", enc(message{Kind: kindDelta, Range: rng, Seed: seed + 1,
			Tokens: []Token{{Start: 0, Owner: 2, Version: 99}}}), ErrDifferentRing},
		{"claim on our allocations", enc(message{Kind: kindDelta, Range: rng, Seed: seed,
			Tokens: []Token{{Start: 0, Owner: 2, Version: own.Version + 100}}}), ErrClaimOnAllocated},
		{"claim by a new token under our allocations", enc(message{Kind: kindDelta, Range: rng, Seed: seed,
			Tokens: []Token{{Start: 2, Owner: 2, Version: 1}}}), ErrClaimOnAllocated},
		{"forged own token", enc(message{Kind: kindDelta, Range: rng, Seed: seed,
			Tokens: []Token{{Start: 0, Owner: a.cfg.Self, Version: own.Version + 5, Free: 1}}}), ErrForgedOwnToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, st := a.FullState(), a.Status()
			err := a.Merge(2, tt.msg)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Merge = %v; want %v", err, tt.want)
			}
			if diff := cmp.Diff(before, a.FullState()); diff != "" {
				t.Fatalf("ring changed by rejected message:\n%s", diff)
			}
			if got := a.Status(); got.Free != st.Free || got.Allocated != st.Allocated {
				t.Fatalf("status changed by rejected message")
			}
		})
	}

	// A claim on our space where we hold no allocation is a legitimate
	// write (a reclaim after a wrong rmpeer, say) and is accepted.
	m := message{Kind: kindDelta, Range: rng, Seed: seed, Tokens: []Token{{Start: size / 2, Owner: 2, Version: 1}}}
	if err := a.Merge(2, m.encode()); err != nil {
		t.Fatalf("Merge(claim on free space) = %v", err)
	}
	if got := a.ring.Owner(size / 2); got != 2 {
		t.Fatalf("owner of the claimed half = %s; want 2", got)
	}
}
