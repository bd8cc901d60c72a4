package ipam

// Anti-entropy summary (gossip.Summarizer). The ring is cut into
// summaryBuckets equal slices of the range by token start; the summary is
// the ring's seed and one 64-bit hash per slice of the tokens starting in
// it. Two peers whose summaries are equal hold the same tokens (up to hash
// collisions); when they differ, only the tokens of the differing slices
// travel, as ordinary deltas of at most deltaTokens tokens (one UDP packet
// each). The summary is 8+1+1+8·32 = 266 bytes whatever the ring's size,
// so the digest a peer sends every second does not grow with N; a repair
// after one lost delta moves ~1/32 of the ring, not all of it.
//
// A peer without a ring ignores deltas that do not start at offset 0
// (mergeTokensLocked), so it gets the whole ring in one message instead.

import (
	"encoding/binary"
	"hash/fnv"
	"net/netip"
)

const (
	summaryBuckets = 32
	summaryMagic   = 'S'
	summaryLen     = 1 + 8 + 1 + 8*summaryBuckets
)

// summarize returns the summary of r.
func summarize(rng netip.Prefix, r *Ring) []byte {
	b := make([]byte, 0, summaryLen)
	b = append(b, summaryMagic)
	b = binary.BigEndian.AppendUint64(b, r.Seed)
	var ready byte
	if r.Ready() {
		ready = 1
	}
	b = append(b, ready)
	size := uint64(1) << (32 - rng.Bits())
	ts := r.Tokens
	var buf [20]byte
	for k := range summaryBuckets {
		h := fnv.New64a()
		end := size * uint64(k+1) / summaryBuckets
		for len(ts) > 0 && uint64(ts[0].Start) < end {
			t := ts[0]
			binary.BigEndian.PutUint32(buf[0:], t.Start)
			binary.BigEndian.PutUint64(buf[4:], uint64(t.Owner))
			binary.BigEndian.PutUint32(buf[12:], t.Version)
			binary.BigEndian.PutUint32(buf[16:], t.Free)
			h.Write(buf[:])
			ts = ts[1:]
		}
		b = h.Sum(b)
	}
	return b
}

// Summary returns the anti-entropy summary of the ring (gossip.Summarizer).
// It never blocks (see FullState).
func (a *Allocator) Summary() []byte {
	a.freshState()
	return a.built.Load().summary
}

// Repair returns the deltas that the peer whose summary is remote may lack
// (gossip.Summarizer): the tokens of every slice whose hash differs, or the
// whole ring when that peer has none. Nothing for a summary of another
// ring, a malformed one, or when this peer has no ring yet. It never
// blocks (see FullState).
func (a *Allocator) Repair(remote []byte) [][]byte {
	a.freshState()
	b := a.built.Load() // one build's pair
	return repair(a.cfg.Range, b.summary, b.full, remote)
}

// repair is Repair on a snapshot: this peer's summary and full state.
func repair(rng netip.Prefix, mine, full, remote []byte) [][]byte {
	if len(remote) != summaryLen || remote[0] != summaryMagic || string(remote) == string(mine) {
		return nil
	}
	seed, ready := binary.BigEndian.Uint64(remote[1:]), remote[9] == 1
	mySeed := binary.BigEndian.Uint64(mine[1:])
	if mine[9] != 1 || (seed != 0 && seed != mySeed) {
		return nil
	}
	if !ready {
		return [][]byte{full}
	}
	m, err := decode(full)
	if err != nil {
		return nil // cannot happen: we encoded it
	}
	size := uint64(1) << (32 - rng.Bits())
	var out [][]byte
	ts := m.Tokens
	for k := range summaryBuckets {
		end := size * uint64(k+1) / summaryBuckets
		n := 0
		for n < len(ts) && uint64(ts[n].Start) < end {
			n++
		}
		off := 10 + 8*k
		if string(remote[off:off+8]) != string(mine[off:off+8]) {
			for part := ts[:n]; len(part) > 0; {
				c := min(len(part), deltaTokens)
				d := message{Kind: kindDelta, Range: rng, Seed: mySeed, Tokens: part[:c]}
				out = append(out, d.encode())
				part = part[c:]
			}
		}
		ts = ts[n:]
	}
	return out
}
