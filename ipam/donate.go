package ipam

// Donation. A peer with no free address asks the live peer advertising the
// most free space (Allocate, kindDonateReq). The donor takes its largest
// free span and gives the highest CIDR-aligned block inside it whose size
// is half the span rounded to the nearest power of two (so a third to two
// thirds of the span), or, when no block of that size fits the span's
// alignment, the largest smaller one that does. It always gives at least
// one free address and keeps at least one. A block is one prefix for the
// router. Why not simply at most half: a span is rarely a power of two
// (the first pod address of a run is taken, the range's first and last
// addresses are reserved), so half rounded down to a CIDR block is often a
// quarter, and with the block also held to the span's upper half it was an
// eighth: a first peer kept 75 % of the range after two joins. Rounded to
// the nearest, a run of 2^k with its first address taken gives exactly its
// upper half, and since the donor is the peer with the most free space,
// peers that join one by one end with shares within a factor of 2 of each
// other (balance_test.go measures it).
//
// The donor writes the tokens itself (it is the owner: a new token at the
// block's start owned by the recipient, one after the block owned by
// itself, both at the version after the run's), persists, broadcasts them
// and answers with them. The recipient merges the answer; if the answer is
// lost, gossip delivers the same tokens. A donor with nothing to give
// answers with its own tokens (their true free counts) and no OK flag, and
// the asker tries the next peer; when none is left Allocate returns
// ErrNoSpace.

import (
	"math/bits"
	"slices"
	"time"

	"github.com/weftmesh/weft/peer"
)

// requests are this peer's donation requests (Allocate) and handoff offers
// (handoffTo) awaiting a reply, by request ID. Guarded by Allocator.mu.
//
// An ID is in replies from before its request is sent until its requester
// stops waiting for it (the requester drops it, at the latest when it
// returns); a reply whose ID is not there (late, duplicated or forged) is
// ignored. Each channel has capacity 1 and deliver never blocks, so Merge
// never waits for a requester. IDs start at a random value, so that a
// reply to a request made before a restart is unlikely to match a new one.
type requests struct {
	next    uint64
	replies map[uint64]chan *message
}

// add registers a new request and returns its ID and reply channel.
func (r *requests) add() (uint64, chan *message) {
	r.next++
	ch := make(chan *message, 1)
	r.replies[r.next] = ch
	return r.next, ch
}

// drop forgets request id.
func (r *requests) drop(id uint64) { delete(r.replies, id) }

// deliver hands reply m to its waiting requester, if any.
func (r *requests) deliver(m *message) {
	if ch, ok := r.replies[m.ReqID]; ok {
		select {
		case ch <- m:
		default:
		}
	}
}

func (a *Allocator) handleDonateReqLocked(from peer.ID, m *message) error {
	r := &message{Kind: kindDonateReply, ReqID: m.ReqID}
	if !a.ring.Ready() || a.handoff.leaving {
		a.sendLocked(from, r)
		return nil
	}
	if !a.knownLocked(from) {
		// We cannot answer a peer our membership does not know yet (the
		// reply would be lost, and the requester would ask someone else
		// while this space is already written as its). Hold the request
		// until the mesh knows the peer (answerHeld): in a mass join, the
		// requester's arrival reaches us by gossip a moment after its
		// request, and staying silent cost it a RequestTimeout.
		a.log.Debug("donation request held: requester not known yet", "from", from)
		a.holdLocked(from, m)
		return nil
	}
	give, ok := a.donationLocked(from)
	if !ok {
		r.Tokens = a.ring.ownedBy(a.cfg.Self)
		a.sendLocked(from, r)
		return nil
	}
	old := a.ring
	next := a.ring.Clone()
	next.Merge(give)
	a.ring = next
	own := a.refreshFreeLocked()
	changed := a.withBoundsLocked(mergeLists(give, own))
	if err := a.commitLocked(&batch{tokens: changed, owners: true}, changed); err != nil {
		a.ring = old
		a.sendLocked(from, r)
		return err
	}
	r.Flags, r.Tokens = flagOK, changed
	a.sendLocked(from, r)
	a.log.Info("donated space", "to", from, "start", a.addr(give[0].Start).Addr(), "tokens", len(give))
	return nil
}

// maxHeld bounds the donation requests held for peers not known yet (one
// per requester): a mass join of this many peers at once is far beyond
// any other limit, and a flood of forged requesters cannot grow memory.
const maxHeld = 1024

// heldReq is a donation request from a peer not known yet when it came.
type heldReq struct {
	m  *message
	at time.Time
}

// holdLocked keeps from's request m until from is known (the latest per
// requester: it asks one donor at a time).
func (a *Allocator) holdLocked(from peer.ID, m *message) {
	if _, ok := a.held[from]; !ok && len(a.held) >= maxHeld {
		a.log.Debug("donation request from an unknown peer dropped: too many held", "from", from)
		return
	}
	a.held[from] = heldReq{m: m, at: time.Now()}
	if a.cfg.Reachable != nil {
		// Run's goroutine looks again every heldRecheck while requests
		// are held: the mesh may know the peer long before SetPeers.
		select {
		case a.heldUp <- struct{}{}:
		default:
		}
	}
}

// heldRecheck is how often held requests are looked at again while the
// mesh's own view can be asked (Config.Reachable).
const heldRecheck = 100 * time.Millisecond

// knownLocked reports whether a donation request from id can be answered:
// id is up in the last SetPeers, or the mesh reaches it already.
func (a *Allocator) knownLocked(id peer.ID) bool {
	return a.aliveLocked(id) || (a.cfg.Reachable != nil && a.cfg.Reachable(id))
}

// answerHeld answers the held requests of peers now known (Run calls it
// when SetPeers signals heldUp: a held request's peer is up, or one is
// stale, so that stale ones never fill maxHeld; and every heldRecheck
// while some are held, with Config.Reachable). One older than
// RequestTimeout is dropped: its requester has asked again (that request
// is the one held) or asked another donor, and space given to it now
// could be given twice (not the same address: only waste). It returns how
// many are still held.
func (a *Allocator) answerHeld() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return 0
	}
	for from, h := range a.held {
		if time.Since(h.at) >= a.cfg.RequestTimeout {
			delete(a.held, from)
			continue
		}
		if !a.knownLocked(from) {
			continue
		}
		delete(a.held, from)
		if err := a.handleDonateReqLocked(from, h.m); err != nil {
			a.log.Warn("answer held donation request", "from", from, "err", err)
		}
	}
	return len(a.held)
}

// donationLocked computes the tokens that give `to` a block of our largest
// free span: the highest CIDR-aligned block inside the span of half the
// span's size rounded to the nearest power of two, or the largest smaller
// one that fits (see the top of the file).
func (a *Allocator) donationLocked(to peer.ID) ([]Token, bool) {
	spans := a.freeSpansLocked()
	if len(spans) == 0 {
		return nil, false
	}
	fs, fe, ti := spans[0][0], spans[0][1], int(spans[0][2])
	t := a.ring.Tokens[ti]
	// The range's reserved first and last addresses are never allocated:
	// a block may cover them (its recipient's free count leaves them out).
	s, e := fs, fe
	if fs == 1 && t.Start == 0 {
		s = 0
	}
	if fe == a.ring.Size-1 && a.ring.end(ti) == a.ring.Size {
		e = a.ring.Size
	}
	var cs, ce uint64
	// The largest power of two <= 2/3 of the span is its half rounded to
	// the nearest power of two.
	for k := bits.Len64(2*(e-s)/3) - 1; k >= 0 && ce == 0; k-- {
		sz := uint64(1) << k
		// The highest aligned block inside [s, e), else the one below it
		// (when the highest holds only a reserved address).
		for c, n := (e-sz)&^(sz-1), 0; c >= s && n < 2; c, n = c-sz, n+1 {
			// It must give a free address and leave one.
			if c+sz > fs && c < fe && min(c+sz, fe)-max(c, fs) < fe-fs {
				cs, ce = c, c+sz
				break
			}
			if c < sz {
				break
			}
		}
	}
	if ce == 0 {
		return nil, false // at most one free address: keep it
	}
	v := t.Version + 1
	give := []Token{{Start: uint32(cs), Owner: to, Version: v, Free: a.capacity(cs, ce)}}
	if ce < a.ring.end(ti) {
		give = append(give, Token{Start: uint32(ce), Owner: a.cfg.Self, Version: v})
	}
	return give, true
}

// mergeLists merges two sorted token lists, the later list winning on equal
// starts.
func mergeLists(x, y []Token) []Token {
	r := Ring{Tokens: slices.Clone(x)}
	for _, t := range y {
		i := r.index(t.Start)
		if i >= 0 && r.Tokens[i].Start == t.Start {
			r.Tokens[i] = t
			continue
		}
		r.Tokens = slices.Insert(r.Tokens, i+1, t)
	}
	return r.Tokens
}
