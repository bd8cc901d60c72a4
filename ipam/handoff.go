package ipam

// Graceful handoff (weft reset, leave). Not for ordinary restarts: pods
// keep their addresses across those, so the peer keeps its space. The
// leaving peer first persists that it is leaving and drops its allocations
// (its pods are going away), so a restart before the end comes back
// leaving too, and never refuses the recipient's claim. It then stops allocating,
// rewrites all its tokens with a live peer as owner (version+1, full free
// counts: its pods are going away) and sends them by unicast. The recipient
// merges them like any ring message (its own allocations are protected),
// persists, broadcasts and acknowledges. Only after the acknowledgement does
// the leaving peer adopt the same tokens, drop its allocations and
// broadcast: until then the space stays its own, so it is never ownerless,
// and since the leaving peer never allocates again, a lost acknowledgement
// can at worst leave both believing they own it with only the recipient
// allocating. An offer that may have been taken (sent, not acknowledged) is
// only ever repeated to the same peer, never to another: two recipients of
// the same tokens at the same version would be two owners. If nobody
// acknowledges, Handoff returns ErrNoPeer and the space can be reclaimed
// with rmpeer after this peer is gone.

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/weftmesh/weft/peer"
)

// handoffState is this peer's leave. Guarded by Allocator.mu.
//
// leaving is set only after the store has persisted it (together with
// dropping every allocation) and is never cleared, not even by a restart:
// a leaving peer allocates nothing, donates nothing and takes no handoff.
// target is the peer our tokens were offered to, which may have taken
// them: it is set and persisted before the offer is sent, and cleared only
// when the offer certainly was not taken (the send failed, or the peer
// refused). While it is set, Handoff offers to target alone.
type handoffState struct {
	leaving bool
	target  peer.ID
}

// Handoff gives all of this peer's ranges to a live peer. Afterwards the
// allocator allocates nothing (ErrLeaving), whatever the outcome.
func (a *Allocator) Handoff(ctx context.Context) error {
	a.mu.Lock()
	if !a.handoff.leaving {
		// Persist the decision first, our allocations dropped with it: if
		// we restart before an offer is confirmed, we come back leaving
		// and with nothing that would make us refuse the recipient's
		// claim on our old space.
		none := peer.ID(0)
		if err := a.st.commit(&batch{delAll: true, leaving: &none}); err != nil {
			a.mu.Unlock()
			return fmt.Errorf("handoff: %w", err)
		}
		a.handoff.leaving = true
		a.allocs.reset()
		a.wakeLocked()
	}
	if !a.ring.Ready() || len(a.ring.ownedBy(a.cfg.Self)) == 0 {
		a.mu.Unlock()
		return nil
	}
	a.mu.Unlock()
	// A live peer refuses while its ring is not ready yet (it joined a
	// moment ago): such refusals are retried for a while, with the live
	// peers of each round. With no live peer at all, there is nobody to
	// wait for.
	deadline := time.Now().Add(handoffPatience)
	for {
		cands := a.handoffCandidates()
		if len(cands) == 0 {
			break
		}
		for _, c := range cands {
			ok, refused, err := a.handoffTo(ctx, c)
			if err != nil {
				return err
			}
			if ok {
				a.log.Info("handed space off", "to", c)
				return nil
			}
			if !refused {
				return fmt.Errorf("handoff to %s: offer sent, no acknowledgement: %w", c, ErrNoPeer)
			}
		}
		if time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("handoff: %w: %w", ErrNoPeer, ctx.Err())
		case <-time.After(handoffRetry):
		}
	}
	return fmt.Errorf("handoff: %w", ErrNoPeer)
}

// handoffPatience bounds how long Handoff retries live peers that refuse
// (their ring is not ready yet), every handoffRetry.
const (
	handoffPatience = 10 * time.Second
	handoffRetry    = 250 * time.Millisecond
)

// handoffCandidates are the peers an offer may go to: the one an earlier
// offer went to, if it may have been taken (offering the same tokens to
// another peer could give them two owners; merging the same tokens twice
// is a no-op for it), else every live peer.
func (a *Allocator) handoffCandidates() []peer.ID {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.handoff.target != 0 {
		return []peer.ID{a.handoff.target}
	}
	var cands []peer.ID
	for _, id := range a.liveLocked() {
		if id != a.cfg.Self {
			cands = append(cands, id)
		}
	}
	return cands
}

// handoffTo offers all our tokens to `to`. refused means `to` certainly did
// not take them (the send failed or it said no), so another peer may be
// tried.
func (a *Allocator) handoffTo(ctx context.Context, to peer.ID) (ok, refused bool, err error) {
	a.mu.Lock()
	give := a.ring.ownedBy(a.cfg.Self)
	for i := range give {
		j := a.ring.index(give[i].Start)
		give[i].Owner = to
		give[i].Version++
		give[i].Free = a.capacity(uint64(give[i].Start), a.ring.end(j))
	}
	give = a.withBoundsLocked(give)
	req, ch := a.reqs.add()
	m := &message{Kind: kindHandoff, Range: a.cfg.Range, Seed: a.ring.Seed, ReqID: req, Tokens: give}
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.reqs.drop(req)
		a.mu.Unlock()
	}()

	sctx, cancel := context.WithTimeout(ctx, a.cfg.RequestTimeout)
	defer cancel()
	a.mu.Lock()
	a.handoff.target = to // from now on the offer may have been taken
	err = a.st.commit(&batch{leaving: &to})
	a.mu.Unlock()
	if err != nil {
		return false, false, fmt.Errorf("handoff to %s: %w", to, err)
	}
	if err := a.tr.SendTo(sctx, to, m.encode()); err != nil {
		a.log.Debug("handoff send", "to", to, "err", err)
		a.clearHandoffTarget() // SendTo failed: not delivered
		return false, true, ctx.Err()
	}
	select {
	case r := <-ch:
		if r.Flags&flagOK == 0 {
			a.clearHandoffTarget() // refused: it did not merge them
			return false, true, nil
		}
	case <-sctx.Done():
		return false, false, ctx.Err()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	next := a.ring.Clone()
	next.Merge(give)
	old := a.ring
	a.ring = next
	if err := a.commitLocked(&batch{tokens: give, owners: true}, give); err != nil {
		a.ring = old
		return false, false, fmt.Errorf("handoff to %s: %w", to, err)
	}
	return true, false, nil
}

// clearHandoffTarget forgets an offer that certainly was not taken.
func (a *Allocator) clearHandoffTarget() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.handoff.target = 0
	none := peer.ID(0)
	if err := a.st.commit(&batch{leaving: &none}); err != nil {
		a.log.Warn("handoff: persist", "err", err)
	}
}

func (a *Allocator) handleHandoffLocked(from peer.ID, m *message) error {
	ack := &message{Kind: kindHandoffAck, ReqID: m.ReqID}
	if !a.ring.Ready() || a.handoff.leaving {
		a.sendLocked(from, ack)
		return nil
	}
	if !slices.ContainsFunc(m.Tokens, func(t Token) bool { return t.Owner == a.cfg.Self }) {
		a.sendLocked(from, ack)
		return fmt.Errorf("handoff gives us nothing: %w", ErrBadMessage)
	}
	if _, err := a.mergeTokensLocked(from, m); err != nil {
		a.sendLocked(from, ack)
		return err
	}
	ack.Flags = flagOK
	a.sendLocked(from, ack)
	a.log.Info("took over handed-off space", "from", from, "tokens", len(m.Tokens))
	return nil
}
