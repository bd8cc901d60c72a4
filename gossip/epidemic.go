package gossip

// Epidemic dissemination. A broadcast is queued in memberlist's
// TransmitLimitedQueue, which piggybacks it on RetransmitMult*log10(N+1)
// outgoing gossip packets and then drops it. Without relaying, a message
// reaches only the few peers those packets went to; a peer that missed it
// waits for anti-entropy. So every peer that learns something new from a
// broadcast forwards the same frame (origin kept) through its own limited
// queue: an infection-style epidemic that reaches all N peers in O(log N)
// gossip rounds with high probability, while each peer sends each message
// a bounded, log N number of times.
//
// "New" is decided by the handler when it can (Epidemic: the merge changed
// its state, so stale or duplicate messages die out at once); otherwise by
// a bounded cache of the hashes of frames already seen. Frames above the
// UDP budget are never relayed: they travel by TCP to every peer already.

import (
	"hash/maphash"
	"sync"

	"github.com/weftmesh/weft/peer"
)

// Epidemic is implemented by handlers that can tell whether a message
// brought them anything new. The mesh calls MergeNew instead of Merge for
// broadcasts, and relays the broadcast onward only when it returns true.
// The contract is Merge's; the result must be false when msg changed
// nothing (a duplicate or an older version), or the epidemic never ends.
type Epidemic interface {
	MergeNew(from peer.ID, msg []byte) (bool, error)
}

// seenSize bounds the cache of relayed frame hashes (for handlers that are
// not Epidemic). 16k hashes cover several rounds of every peer's deltas in
// a 5,000-peer mesh.
const seenSize = 16384

// seenCache remembers the hashes of the last seenSize frames, in a ring.
type seenCache struct {
	seed maphash.Seed

	mu   sync.Mutex // guards following
	set  map[uint64]struct{}
	ring []uint64
	next int
}

// newSeenCache returns an empty cache. It grows as frames come (full, it
// holds ~0.5 MiB): an idle or small mesh never fills it, and a thousand
// peers simulated in one process do not each start with it full size.
func newSeenCache() *seenCache {
	return &seenCache{seed: maphash.MakeSeed(), set: map[uint64]struct{}{}}
}

// add records frame f and reports whether it was new.
func (s *seenCache) add(f []byte) bool {
	h := maphash.Bytes(s.seed, f)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.set[h]; ok {
		return false
	}
	if len(s.ring) < seenSize {
		s.ring = append(s.ring, h)
	} else {
		delete(s.set, s.ring[s.next])
		s.ring[s.next] = h
		s.next = (s.next + 1) % seenSize
	}
	s.set[h] = struct{}{}
	return true
}
