package ipam

// The ring. The range is a line of Size addresses (offsets 0..Size-1, read
// as a ring for the documentation's sake). A Token at offset Start begins a
// run that ends where the next token begins (or at Size). Each token has
// one Owner, a Version and the Free count its owner last advertised.
//
// Why this merge is a CRDT: a ring is a map Start -> Token, and merge takes
// for every Start the larger token in the total order (Version, Owner,
// Free). That is a pointwise join of a join-semilattice, so it is
// commutative, associative and idempotent, whatever message order, loss or
// duplication the transport produces (ring_test.go checks the laws with
// rapid). Tokens are never removed: splitting a run adds a token, giving it
// away bumps the version. Only a run's owner writes its tokens (donation,
// free-count updates, handoff), except the one chosen reclaimer of a dead
// peer (see reclaim.go); so, between live peers, "higher version" always
// means "later write by the rightful writer", and once two peers have merged
// each other's tokens they agree on the owner of every address.
//
// Seed identifies the ring: the hash of the peers of its first division.
// Merging tokens of two rings formed independently would mix their owners,
// so a message with a different non-zero Seed is refused outright.

import (
	"cmp"
	"encoding/binary"
	"hash/fnv"
	"math/bits"
	"slices"
	"sort"

	"github.com/weftmesh/weft/peer"
)

// Token starts a run of addresses owned by one peer.
type Token struct {
	Start   uint32  // offset of the run's first address from the range's first
	Owner   peer.ID // the run's owner, the only peer that writes this token
	Version uint32  // bumped by every write
	Free    uint32  // free addresses in the run, as the owner last advertised
}

// less is the total order merge uses: higher version wins; ties (only
// possible between forged or independently created tokens) are broken by
// owner then free so that merge stays deterministic.
func (t Token) less(u Token) bool {
	if t.Version != u.Version {
		return t.Version < u.Version
	}
	if t.Owner != u.Owner {
		return t.Owner < u.Owner
	}
	return t.Free < u.Free
}

// Ring is the replicated division of the range. The zero Ring (no tokens)
// is an unbootstrapped ring.
type Ring struct {
	Size   uint64  // addresses in the range (a power of two)
	Seed   uint64  // identity of the first division; 0 while empty
	Tokens []Token // sorted by Start, Start values distinct and < Size
}

// Ready reports whether the ring covers the whole range.
func (r *Ring) Ready() bool { return len(r.Tokens) > 0 && r.Tokens[0].Start == 0 }

// Clone returns a deep copy.
func (r *Ring) Clone() Ring {
	return Ring{Size: r.Size, Seed: r.Seed, Tokens: slices.Clone(r.Tokens)}
}

// Merge joins tokens (sorted, distinct starts) into r and returns the tokens
// of r that changed, in order.
func (r *Ring) Merge(in []Token) []Token {
	changed := r.newer(in)
	r.apply(changed)
	return changed
}

// newer returns the tokens of in (sorted, distinct starts) that Merge
// takes: those at a start r lacks and those that win over r's. It reads
// r only.
func (r *Ring) newer(in []Token) []Token {
	var out []Token
	for _, t := range in {
		if i := r.index(t.Start); i < 0 || r.Tokens[i].Start != t.Start || r.Tokens[i].less(t) {
			out = append(out, t)
		}
	}
	return out
}

// apply writes tokens that newer returned into r where they are: a token
// at a start r has replaces r's, the others are inserted in one pass from
// the end (the slice grows by their number). undo puts r back as it was.
// A mass join merges every new delta at every peer, and copying the ring
// for each (a clone and a merged copy) made each of a peer's merges
// allocate O(N) bytes, O(N³) over the simulator's join.
func (r *Ring) apply(ts []Token) (undo func()) {
	var replaced, inserted []Token // r's replaced tokens as they were; the new ones
	for _, t := range ts {
		if i := r.index(t.Start); i >= 0 && r.Tokens[i].Start == t.Start {
			replaced = append(replaced, r.Tokens[i])
			r.Tokens[i] = t
		} else {
			inserted = append(inserted, t)
		}
	}
	if len(inserted) > 0 {
		n := len(r.Tokens)
		r.Tokens = slices.Grow(r.Tokens, len(inserted))[:n+len(inserted)]
		i, j := n-1, len(inserted)-1
		for w := len(r.Tokens) - 1; j >= 0; w-- { // the largest start left goes last
			if i >= 0 && r.Tokens[i].Start > inserted[j].Start {
				r.Tokens[w] = r.Tokens[i]
				i--
			} else {
				r.Tokens[w] = inserted[j]
				j--
			}
		}
	}
	return func() {
		for _, t := range replaced {
			r.Tokens[r.index(t.Start)] = t
		}
		if len(inserted) > 0 {
			r.Tokens = slices.DeleteFunc(r.Tokens, func(t Token) bool {
				_, found := slices.BinarySearchFunc(inserted, t.Start, func(x Token, s uint32) int { return cmp.Compare(x.Start, s) })
				return found
			})
		}
	}
}

// index returns the index of the token whose run holds off, or -1.
func (r *Ring) index(off uint32) int {
	i := sort.Search(len(r.Tokens), func(i int) bool { return r.Tokens[i].Start > off })
	return i - 1
}

// Owner returns the owner of the address at off (0 if unowned).
func (r *Ring) Owner(off uint32) peer.ID {
	if i := r.index(off); i >= 0 {
		return r.Tokens[i].Owner
	}
	return 0
}

// end returns the end (exclusive) of token i's run.
func (r *Ring) end(i int) uint64 {
	if i+1 < len(r.Tokens) {
		return uint64(r.Tokens[i+1].Start)
	}
	return r.Size
}

// Run is one run of the ring: [Start, End) owned by Owner.
type Run struct {
	Start, End uint64
	Owner      peer.ID
	Free       uint32
}

// Runs returns the ring's runs in order, adjacent runs of one owner
// coalesced (Free summed).
func (r *Ring) Runs() []Run {
	var runs []Run
	for i, t := range r.Tokens {
		e := r.end(i)
		if n := len(runs); n > 0 && runs[n-1].Owner == t.Owner && runs[n-1].End == uint64(t.Start) {
			runs[n-1].End = e
			runs[n-1].Free += t.Free
			continue
		}
		runs = append(runs, Run{Start: uint64(t.Start), End: e, Owner: t.Owner, Free: t.Free})
	}
	return runs
}

// ownedBy returns copies of the tokens owned by id.
func (r *Ring) ownedBy(id peer.ID) []Token {
	var out []Token
	for _, t := range r.Tokens {
		if t.Owner == id {
			out = append(out, t)
		}
	}
	return out
}

// hashTokens fingerprints a token list (positions and versions).
func hashTokens(ts []Token) uint64 {
	h := fnv.New64a()
	var b [20]byte
	for _, t := range ts {
		binary.BigEndian.PutUint32(b[0:], t.Start)
		binary.BigEndian.PutUint64(b[4:], uint64(t.Owner))
		binary.BigEndian.PutUint32(b[12:], t.Version)
		h.Write(b[:16])
	}
	return h.Sum64()
}

// seedOf identifies a first division by its peers.
func seedOf(peers []peer.ID) uint64 {
	h := fnv.New64a()
	var b [8]byte
	for _, p := range peers {
		binary.BigEndian.PutUint64(b[:], uint64(p))
		h.Write(b[:])
	}
	if s := h.Sum64(); s != 0 {
		return s
	}
	return 1
}

// divide makes the first division of a range of size addresses among peers
// (sorted, distinct, non-empty): the range is cut into 4*2^ceil(log2 n)
// CIDR blocks (never more than the range has addresses) and each peer gets a
// contiguous, near-equal share of blocks, so every run starts and ends on a
// CIDR boundary. Every peer computes the same tokens from the same list.
func divide(size uint64, peers []peer.ID, free func(start, end uint64) uint32) Ring {
	n := uint64(len(peers))
	blocks := uint64(1) << bits.Len64(n-1) * 4
	blocks = min(blocks, size)
	bs := size / blocks
	r := Ring{Size: size, Seed: seedOf(peers)}
	for i, p := range peers {
		s := uint64(i) * blocks / n * bs
		e := (uint64(i) + 1) * blocks / n * bs
		if e <= s {
			continue // more peers than blocks: the rest get space by donation
		}
		r.Tokens = append(r.Tokens, Token{Start: uint32(s), Owner: p, Version: 1, Free: free(s, e)})
	}
	return r
}

// cidrs splits [start, end) into maximal aligned power-of-two blocks,
// returned as (offset, log2 size) pairs.
func cidrs(start, end uint64) [][2]uint64 {
	var out [][2]uint64
	for start < end {
		k := uint64(bits.TrailingZeros64(start))
		if start == 0 {
			k = 63
		}
		for k > 0 && start+(1<<k) > end {
			k--
		}
		out = append(out, [2]uint64{start, k})
		start += 1 << k
	}
	return out
}
