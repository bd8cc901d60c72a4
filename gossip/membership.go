package gossip

// Membership anti-entropy. memberlist spreads joins, metadata updates and
// deaths by piggybacked gossip with a bounded retransmit count, and
// repairs what a peer missed only by its periodic push-pull, whose
// interval it stretches with log N (a minute at 1,000 peers). In a mass
// join, thousands of alive and metadata messages compete for the same
// packets and many peers miss some. So the digest (antientropy.go) also
// carries a membership summary: the XOR of a hash of (name, metadata) over
// every peer this one lists up, itself included. XOR makes it order-free
// and incremental (each event swaps one term). Beside it travel the same
// XORs per bucket of peers (memberBuckets, by a hash of the name), each
// with its age: how long since this peer's view of that bucket last
// changed.
//
// When two peers' summaries differ, the receiver runs one memberlist
// push-pull with the sender (a join of a member, which exchanges both full
// views), at most once per membershipSyncEvery, only if some bucket that
// differs has been as it is on both sides for memberSpread: a difference
// where one side has just changed is a change gossip is still spreading,
// and gossip delivers it for nothing. A sender this peer lists down is
// synced with at once (the push-pull tells it so, and it refutes), and so
// is a sender without buckets (a peer of an older version). Repairs cost
// O(N) bytes only for views that stay different; agreeing peers pay the
// summaries' 168 bytes a digest.
//
// Without the wait, every change (a join, a death, a metadata update) made
// the digests that crossed it while it spread differ, and each started a
// push-pull of two full views: in the simulator one joiner among 500 peers
// set off 119–136 push-pulls and 49–56 MB on streams, among 2,000 peers
// 2,931 and 4.8 GB (with a first version that waited for a second of
// differing digests instead): O(N²) bytes per event, for what gossip
// delivered anyway.

import (
	"encoding/binary"
	"hash/fnv"
	"time"
)

const (
	membersChannel = "~members" // digest entry name; channel names may not start with '~'
	// bucketsChannel is the digest entry of the per-bucket summaries:
	// memberBuckets times the low 32 bits of the bucket's XOR and its age
	// (1 byte, in bucketAgeUnit, at most maxBucketAge): 160 bytes.
	bucketsChannel = "~mbuckets"
	memberBuckets  = 32
	bucketAgeUnit  = 100 * time.Millisecond
	maxBucketAge   = 0xff
	bucketSize     = 5
	// membershipSyncEvery bounds the push-pulls one peer starts to repair
	// membership (each moves both views, O(N) bytes).
	membershipSyncEvery = 3 * time.Second
	// memberSpread is how long both sides must have held a bucket's
	// difference before it is repaired: longer than gossip takes to
	// bring a change from the first peers that have it to the last
	// (log3 N gossip rounds of 200 ms to reach most, a few more for the
	// last: ~2 s at 2,000 peers).
	memberSpread = 2 * time.Second
)

func memberTerm(name string, meta []byte) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	h.Write([]byte{0})
	h.Write(meta)
	return h.Sum64()
}

// bucketOf is the bucket of the peer called name.
func bucketOf(name string) int {
	h := fnv.New32a()
	h.Write([]byte(name))
	return int(h.Sum32() % memberBuckets)
}

// rehashLocked updates e's term in memberHash and its bucket after an
// event.
func (m *Mesh) rehashLocked(e *entry, meta []byte) {
	var t uint64
	if e.info.State.Up() {
		t = memberTerm(e.info.Name, meta)
	}
	m.setTermLocked(e, t)
}

// setTermLocked replaces e's term by t.
func (m *Mesh) setTermLocked(e *entry, t uint64) {
	if t == e.hash {
		return
	}
	b := bucketOf(e.info.Name)
	m.memberHash ^= e.hash ^ t
	m.buckets[b] ^= e.hash ^ t
	m.bucketAt[b] = time.Now()
	e.hash = t
}

// membersSummary returns this peer's membership summary.
func (m *Mesh) membersSummary() []byte {
	m.mu.Lock()
	h := m.memberHash ^ memberTerm(m.cfg.Name, m.metaBytes)
	m.mu.Unlock()
	return binary.BigEndian.AppendUint64(nil, h)
}

// bucketSummaries returns this peer's per-bucket summaries at now: each
// bucket's XOR and age.
func (m *Mesh) bucketSummaries(now time.Time) []byte {
	b := make([]byte, 0, memberBuckets*bucketSize)
	m.mu.Lock()
	defer m.mu.Unlock()
	self := bucketOf(m.cfg.Name)
	for i := range memberBuckets {
		x := m.buckets[i]
		if i == self {
			x ^= memberTerm(m.cfg.Name, m.metaBytes)
		}
		b = binary.BigEndian.AppendUint32(b, uint32(x))
		b = append(b, bucketAge(m.bucketAt[i], now))
	}
	return b
}

// bucketAge is the age of a bucket last changed at (zero: never) at now,
// in bucketAgeUnit, at most maxBucketAge.
func bucketAge(at, now time.Time) byte {
	if at.IsZero() {
		return maxBucketAge
	}
	return byte(min(max(now.Sub(at)/bucketAgeUnit, 0), maxBucketAge))
}

// settledDifference reports whether the remote per-bucket summaries
// differ from ours (local) in a bucket both sides have held as it is for
// memberSpread; both are bucketSummaries. A malformed remote is treated
// as differing for good: an older peer's digest has no buckets, and its
// difference is repaired as before.
func settledDifference(local, remote []byte) bool {
	if len(remote) != memberBuckets*bucketSize || len(local) != len(remote) {
		return true
	}
	settled := byte(memberSpread / bucketAgeUnit)
	for i := 0; i < len(local); i += bucketSize {
		if string(local[i:i+4]) != string(remote[i:i+4]) && local[i+4] >= settled && remote[i+4] >= settled {
			return true
		}
	}
	return false
}

// syncMembers starts one push-pull with the peer called name unless one
// ran less than membershipSyncEvery ago.
func (m *Mesh) syncMembers(name string) {
	now := time.Now().UnixNano()
	last := m.lastMemberSync.Load()
	if now-last < int64(membershipSyncEvery) || !m.lastMemberSync.CompareAndSwap(last, now) {
		return
	}
	m.mu.Lock()
	var addr string
	if e := m.peers[name]; e != nil && e.node != nil {
		addr = e.node.FullAddress().Addr
	}
	m.mu.Unlock()
	if addr == "" {
		return
	}
	m.memberSyncs.Add(1)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		if _, err := m.ml.Join([]string{name + "/" + addr}); err != nil {
			m.log.Debug("membership push-pull", "peer", name, "err", err)
		}
	}()
}
