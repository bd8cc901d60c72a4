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
// differ, the receiver runs one memberlist push-pull with the sender (a
// join of a member, which exchanges both full views), at most once per
// membershipSyncEvery: repairs cost O(N) bytes only while views differ;
// agreeing peers pay eight bytes a digest.

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
)

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
