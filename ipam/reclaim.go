package ipam

// Reclaim (weft rmpeer): taking over a dead peer's space.
//
// Why it is safe. Only one peer may ever write a dead peer's tokens, or two
// reclaimers would each think they own the space and allocate from it. So
// the writer is decided by a single-decree Paxos instance (paxos.go) keyed
// by (dead peer, hash of the dead peer's tokens: starts, owner, versions).
// The electorate is every peer this peer knows that has not left, dead or
// alive (the target excluded), and the quorum a majority of it, so that the
// two sides of a partition cannot both reach a quorum (a bare majority of
// the *live* peers would let each side of a split reclaim the same space).
// The daemon drops reclaimed or forgotten peers from SetPeers.
//
//   - Two concurrent Reclaims of the same dead peer that see the same tokens
//     use the same instance; Paxos chooses one value (one taker), and both
//     proposers learn it. Only the taker writes; the other returns
//     ErrReclaimedByOther, after writing the taker's new tokens itself: they
//     are fixed by the decision (owner = taker, version+1), so every writer
//     writes the same, and the space moves even if the taker died after
//     winning.
//   - An acceptor refuses (Nack) a key whose hash differs from its own view
//     of the dead peer's tokens, and sends its ring, so proposers converge on
//     one key before anything is chosen. A value is thus only chosen for the
//     key a majority of live peers holds. Once the taker writes, the dead
//     peer owns nothing, every later key hashes the empty set and Reclaim
//     returns ErrNothingToReclaim.
//   - Acceptors refuse (flagAlive) when the peer is alive to them, and the
//     caller refuses when it is alive to itself: a live peer's space is never
//     taken, even if one reclaimer's failure detector is wrong.
//   - The taker writes version+1 of exactly the tokens it saw; merge makes
//     the write win everywhere. A peer holding allocations in that space
//     (which cannot be a live, rightful owner, see above) refuses it.
//
// The remaining assumption, as in Weave: the dead peer is really gone and
// its last writes have reached the live peers (gossip anti-entropy does
// that within seconds). A dead peer's write that surfaces only after a
// majority promised could give two keys for the same tokens; run rmpeer
// once the peer has been dead for longer than a push-pull interval.
//
// Reclaim keeps no state of its own in the Allocator: a call's progress is
// in its local variables, and what must outlive it (acceptor promises and
// acceptances, the ballot to beat) is the instance's entry in paxosState.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/weftmesh/weft/peer"
)

// Reclaim takes over the space of dead peer id and returns how many
// addresses this peer took. It refuses a peer that is alive (ErrPeerAlive)
// and reports ErrReclaimedByOther when a concurrent reclaim elsewhere won.
func (a *Allocator) Reclaim(ctx context.Context, id peer.ID) (int64, error) {
	if id == a.cfg.Self {
		return 0, fmt.Errorf("reclaim %s: %w", id, ErrSelf)
	}
	var first []Token // the dead peer's tokens when this reclaim started
	for {
		a.mu.Lock()
		switch {
		case a.closed:
			a.mu.Unlock()
			return 0, fmt.Errorf("reclaim %s: %w", id, ErrClosed)
		case a.aliveLocked(id):
			a.mu.Unlock()
			return 0, fmt.Errorf("reclaim %s: %w", id, ErrPeerAlive)
		case !a.ring.Ready():
			a.mu.Unlock()
			return 0, fmt.Errorf("reclaim %s: %w", id, ErrNotReady)
		}
		ts := a.ring.ownedBy(id)
		if len(ts) == 0 {
			if first != nil && a.ownsAllLocked(first) {
				// Preempted while winning: the other proposer learned the
				// decision and wrote our tokens before our retry. We took
				// the space over all the same.
				n := a.sizeLocked(first)
				a.mu.Unlock()
				return n, nil
			}
			a.mu.Unlock()
			return 0, fmt.Errorf("reclaim %s: %w", id, ErrNothingToReclaim)
		}
		if first == nil {
			first = ts
		}
		key := instanceKey{Kind: instReclaim, Dead: id, Hash: hashTokens(ts)}
		electorate, live := a.electorateLocked(id)
		a.mu.Unlock()
		if len(live) < electorate/2+1 {
			return 0, fmt.Errorf("reclaim %s: %d of %d peers reachable, need %d: %w", id, len(live), electorate, electorate/2+1, ErrNoQuorum)
		}

		v, err := a.paxosRound(ctx, key, live, electorate/2+1, func([]peer.ID) []peer.ID { return []peer.ID{a.cfg.Self} })
		switch {
		case err == nil:
		case errors.Is(err, errMismatch), errors.Is(err, errPreempted), errors.Is(err, errNoQuorum):
			t := time.NewTimer(time.Duration(rand.Int64N(int64(a.cfg.BootstrapInterval)) + 1))
			select {
			case <-ctx.Done():
				t.Stop()
				return 0, fmt.Errorf("reclaim %s: %w", id, ctx.Err())
			case <-t.C:
			}
			continue
		default:
			return 0, fmt.Errorf("reclaim %s: %w", id, err)
		}
		if len(v) == 1 && v[0] == a.cfg.Self {
			a.mu.Lock()
			n, err := a.takeOverLocked(key, a.cfg.Self)
			if errors.Is(err, errMismatch) && a.ownsAllLocked(ts) {
				// A peer that learned the decision wrote it for us first.
				n, err = a.sizeLocked(ts), nil
			}
			a.mu.Unlock()
			if err != nil {
				return 0, fmt.Errorf("reclaim %s: %w", id, err)
			}
			return n, nil
		}
		a.mu.Lock()
		if len(v) == 1 {
			// The decision fixes the new tokens (the key's tokens, owner
			// v[0], version+1), so we write them on the taker's behalf:
			// the space moves even if the taker died after winning.
			if _, err := a.takeOverLocked(key, v[0]); err != nil && !errors.Is(err, errMismatch) {
				a.log.Warn("reclaim on the winner's behalf", "winner", v[0], "err", err)
			}
			a.sendLocked(v[0], &message{Kind: kindChosen, Key: key, Value: v})
		}
		a.mu.Unlock()
		return 0, fmt.Errorf("reclaim %s: taken by %v: %w", id, v, ErrReclaimedByOther)
	}
}

// electorateLocked returns the size of the reclaim electorate (every peer
// in the last SetPeers that has not left, dead or alive, self included,
// the target excluded) and its live members. Counting the unreachable
// ones too is what keeps a partition from reclaiming on both sides: both
// sides see the same electorate, and only one can hold a majority of it.
func (a *Allocator) electorateLocked(target peer.ID) (int, []peer.ID) {
	n := 1
	for id, p := range a.peers {
		if id != a.cfg.Self && id != target && p.state != peer.Left {
			n++
		}
	}
	var live []peer.ID
	for _, id := range a.liveLocked() {
		if id != target {
			live = append(live, id)
		}
	}
	return n, live
}

// takeOverLocked writes the dead peer's tokens with taker as owner, if
// they are still exactly the ones the instance was about. Any peer that
// learns the decision may do it: every writer writes the same owners and
// versions, so the writes merge into one.
func (a *Allocator) takeOverLocked(key instanceKey, taker peer.ID) (int64, error) {
	ts := a.ring.ownedBy(key.Dead)
	if len(ts) == 0 || hashTokens(ts) != key.Hash {
		return 0, fmt.Errorf("take over: %w", errMismatch)
	}
	var n int64
	for i := range ts {
		j := a.ring.index(ts[i].Start)
		e := a.ring.end(j)
		n += int64(e - uint64(ts[i].Start))
		ts[i].Owner = taker
		ts[i].Version++
		ts[i].Free = a.capacity(uint64(ts[i].Start), e)
	}
	old := a.ring
	next := a.ring.Clone()
	next.Merge(ts)
	a.ring = next
	own := a.refreshFreeLocked()
	changed := a.withBoundsLocked(mergeLists(ts, own))
	if err := a.commitLocked(&batch{tokens: changed, owners: true}, changed); err != nil {
		a.ring = old
		return 0, err
	}
	a.log.Info("reclaimed dead peer's space", "peer", key.Dead, "taker", taker, "addresses", n)
	return n, nil
}

// ownsAllLocked reports whether we own the runs starting at ts' starts.
func (a *Allocator) ownsAllLocked(ts []Token) bool {
	for _, t := range ts {
		if a.ring.Owner(t.Start) != a.cfg.Self {
			return false
		}
	}
	return true
}

// sizeLocked sums the sizes of the runs starting at ts' starts.
func (a *Allocator) sizeLocked(ts []Token) int64 {
	var n int64
	for _, t := range ts {
		if i := a.ring.index(t.Start); i >= 0 {
			n += int64(a.ring.end(i) - uint64(t.Start))
		}
	}
	return n
}

// handleChosenLocked: a reclaim proposer learned that we were chosen.
func (a *Allocator) handleChosenLocked(from peer.ID, m *message) error {
	if m.Key.Kind != instReclaim || len(m.Value) != 1 || m.Value[0] != a.cfg.Self {
		return nil
	}
	s := a.paxos.acceptors[m.Key]
	if s == nil || len(s.Value) != 1 || s.Value[0] != a.cfg.Self {
		// We only act on a choice our own acceptor has seen accepted, so a
		// forged kindChosen cannot make us write a dead peer's tokens.
		return nil
	}
	if _, err := a.takeOverLocked(m.Key, a.cfg.Self); err != nil && !errors.Is(err, errMismatch) {
		return err
	}
	return nil
}
