package gossip

// Membership anti-entropy. memberlist spreads joins, metadata updates and
// deaths by piggybacked gossip with a bounded retransmit count, and
// repairs what a peer missed only by its periodic push-pull, whose
// interval it stretches with log N (a minute at 1,000 peers). In a mass
// join, thousands of alive and metadata messages compete for the same
// packets and many peers miss some. So the digest (antientropy.go) also
// carries a membership summary: the XOR of a hash of (name, metadata) over
// every peer this one lists up, itself included. XOR makes it order-free
// and incremental (each event swaps one term). When two peers' summaries
// differ for longer than gossip takes to spread a change (memberSpread:
// every digest this peer received in that time differed from its own),
// the receiver runs one memberlist push-pull with the sender (a join of a
// member, which exchanges both full views), at most once per
// membershipSyncEvery: repairs cost O(N) bytes only while views stay
// different; agreeing peers pay eight bytes a digest. A sender this peer
// lists down is synced with at once (the push-pull tells it so, and it
// refutes).
//
// Without the wait, every change (a join, a death, a metadata update) made
// the digests that crossed it in its second of spreading differ, and each
// started a push-pull of two full views: in the simulator one joiner among
// 500 peers cost 119–136 push-pulls and 49–56 MB on streams (a kill 0 to
// 184, up to 75 MB), for what gossip delivered anyway: O(N²) bytes per event.

import (
	"encoding/binary"
	"hash/fnv"
	"time"
)

const (
	membersChannel = "~members" // digest entry name; channel names may not start with '~'
	// membershipSyncEvery bounds the push-pulls one peer starts to repair
	// membership (each moves both views, O(N) bytes).
	membershipSyncEvery = 3 * time.Second
	// memberSpread is how long membership summaries may differ before a
	// repair: about the time gossip takes to bring a change to every peer
	// (log3 N gossip rounds of 200 ms, new messages first: 1.1 s at 500
	// peers, 1.3 s at 1,000). In the simulator at 500 peers (3 runs each),
	// 1 s left the mass join as it was (membership agreed 10–11 s, the
	// ring 12.25 s) and cut a joiner's push-pulls from 119–136 to 18–51;
	// 2 s cut them to 0–27 but delayed the join's agreement by 3–6 s (the
	// repairs of peers behind the join's gossip backlog came later).
	memberSpread = time.Second
)

// mismatchStreak follows the membership summaries of the digests one peer
// receives (only the anti-entropy loop uses it).
type mismatchStreak struct {
	since time.Time // first of the differing digests since the last equal one; zero: none
}

// observe records whether a digest's summary equalled ours at now, and
// reports whether a repair is due: the summaries have differed, digest
// after digest, for memberSpread. Reporting one starts a new streak.
func (s *mismatchStreak) observe(equal bool, now time.Time) bool {
	switch {
	case equal:
		s.since = time.Time{}
	case s.since.IsZero():
		s.since = now
	case now.Sub(s.since) >= memberSpread:
		s.since = time.Time{}
		return true
	}
	return false
}

func memberTerm(name string, meta []byte) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	h.Write([]byte{0})
	h.Write(meta)
	return h.Sum64()
}

// rehashLocked updates e's term in memberHash after an event.
func (m *Mesh) rehashLocked(e *entry, meta []byte) {
	var t uint64
	if e.info.State.Up() {
		t = memberTerm(e.info.Name, meta)
	}
	m.memberHash ^= e.hash ^ t
	e.hash = t
}

// membersSummary returns this peer's membership summary.
func (m *Mesh) membersSummary() []byte {
	m.mu.Lock()
	h := m.memberHash ^ memberTerm(m.cfg.Name, m.metaBytes)
	m.mu.Unlock()
	return binary.BigEndian.AppendUint64(nil, h)
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
