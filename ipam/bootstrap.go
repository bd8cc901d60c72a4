package ipam

// Bootstrap: the ring's first division, which must happen once.
//
// consensus=N: every launch peer runs Paxos rounds (paxos.go) on the one
// bootstrap instance with quorum N/2+1, proposing the set of peers that
// promised; the chosen set is divided deterministically (divide), so every
// peer that learns the value builds the same ring. Two rings cannot form
// among peers started with the same N: two quorums of N/2+1 out of N
// intersect, and peers that already hold a ring answer with it instead of
// taking part. A peer that receives a ring by gossip adopts it and stops.
//
// seed=NAME,...: once SetPeers has given the IDs of all named peers, each
// of them divides the ring among exactly those IDs, identically; the rest
// wait for it. observer: waits for a ring.
//
// All launch peers must be given the same N: Paxos's argument needs every
// quorum to intersect, and a peer with consensus=1 decides alone. weft's
// default (1 + number of PEERs) is safe for the usual launch order, where
// the first peer, started alone, forms the ring before the others join and
// adopt it (peers with a ring answer every Prepare with it, and phase 1
// waits for every live peer). Two rings that formed anyway never mix: their
// seeds differ, and every message of the other ring is refused with
// ErrDifferentRing, logged by the caller.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/weftmesh/weft/peer"
)

var bootstrapKey = instanceKey{Kind: instBootstrap}

// bootstrapState is what this peer learned of other bootstrap proposers.
// Guarded by Allocator.mu. Neither field bears on safety: heard only feeds
// the status line, and foreignPrepare only holds our own rounds back for a
// while, so that two proposers duel less.
type bootstrapState struct {
	heard          map[peer.ID]bool // peers that spoke bootstrap Paxos to us, self included
	foreignPrepare time.Time        // when another peer last sent a bootstrap Prepare
}

// heardFrom notes a bootstrap message from another peer (a Prepare if
// prepare).
func (b *bootstrapState) heardFrom(id peer.ID, prepare bool) {
	b.heard[id] = true
	if prepare {
		b.foreignPrepare = time.Now()
	}
}

func (a *Allocator) bootstrapLoop(ctx context.Context) {
	// Launch peers usually start together: a random first pause spreads
	// their first proposals so that one usually wins without a duel.
	// A lone launch peer (consensus=1) has nobody to duel with: it goes at
	// once, which also shortens the window in which peers launched later
	// against it could still find it without a ring.
	var pause time.Duration
	if a.cfg.Init.Mode != InitConsensus || a.cfg.Init.Quorum > 1 {
		pause = rand.N(a.cfg.BootstrapInterval)
	}
	first := time.NewTimer(pause)
	select {
	case <-ctx.Done():
		first.Stop()
		return
	case <-first.C:
	}
	for {
		a.mu.Lock()
		ready, wake := a.ring.Ready(), a.wake
		a.mu.Unlock()
		if ready {
			return
		}
		mode := a.cfg.Init.Mode
		if a.cfg.BootstrapGate != nil && !a.cfg.BootstrapGate() {
			mode = InitObserver // not yet allowed to divide: only look for a ring
		}
		switch mode {
		case InitConsensus:
			a.tryConsensus(ctx)
		case InitSeed:
			if !a.trySeed() {
				a.queryRing()
			}
		case InitObserver:
			a.queryRing()
		}
		d := time.Duration(float64(a.cfg.BootstrapInterval) * (0.5 + rand.Float64()))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// quorum is the bootstrap quorum.
func (a *Allocator) quorum() int { return a.cfg.Init.Quorum/2 + 1 }

func (a *Allocator) tryConsensus(ctx context.Context) {
	a.mu.Lock()
	live := a.liveLocked()
	busy := time.Since(a.boot.foreignPrepare) < 2*a.cfg.BootstrapInterval
	a.mu.Unlock()
	if busy {
		return // another proposer is running a round; let it finish
	}
	v, err := a.paxosRound(ctx, bootstrapKey, live, a.quorum(), func(ids []peer.ID) []peer.ID { return ids })
	if err != nil {
		if !errors.Is(err, errNoQuorum) && !errors.Is(err, errHasRing) && !errors.Is(err, context.Canceled) {
			a.log.Debug("bootstrap round", "err", err)
		}
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.installLocked(divide(a.ring.Size, v, a.capacity)); err != nil {
		a.log.Error("install ring", "err", err)
		return
	}
	a.log.Info("ring formed by consensus", "peers", len(v))
}

// ringQueryFanout is how many live peers a peer waiting for a ring asks in
// each bootstrap round.
//
// It asked every live peer, and each one holding a ring answered with the
// whole ring over TCP: in a mass join, where hundreds of peers wait for a
// ring at once, that was O(N) messages and O(N) full rings per waiting
// peer and round. A simulated 300-peer join sent 300 Prepares and up to
// 2,700 streams per peer in some runs (the other runs 20-40), and those
// runs' peak heap was 4x the others'. A few random peers suffice: once
// any share f of the live peers holds the ring, a round misses it with
// probability (1-f)^3, and the ring also comes by the join push-pull, the
// first peer's broadcast and every digest exchange (anti-entropy repairs a
// peer without a ring with the whole ring).
const ringQueryFanout = 3

// queryRing asks ringQueryFanout random live peers for their ring (a
// ballot-0 Prepare: peers with a ring answer with it, the others ignore
// it), so that a waiting peer does not depend on anti-entropy.
func (a *Allocator) queryRing() {
	a.mu.Lock()
	defer a.mu.Unlock()
	others := slices.DeleteFunc(a.liveLocked(), func(id peer.ID) bool { return id == a.cfg.Self })
	rand.Shuffle(len(others), func(i, j int) { others[i], others[j] = others[j], others[i] })
	for _, id := range others[:min(len(others), ringQueryFanout)] {
		a.sendLocked(id, &message{Kind: kindPrepare, Key: bootstrapKey, Ballot: ballot{P: a.cfg.Self}})
	}
}

// trySeed installs the seed ring if all seeds are known and we are one;
// it reports whether this peer is a seed.
func (a *Allocator) trySeed() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	byName := map[string]peer.ID{}
	for id, p := range a.peers {
		byName[p.name] = id
	}
	if a.cfg.Name != "" {
		byName[a.cfg.Name] = a.cfg.Self
	}
	var ids []peer.ID
	self := false
	for _, n := range a.cfg.Init.Seeds {
		id, ok := byName[n]
		if !ok {
			return slices.Contains(a.cfg.Init.Seeds, a.cfg.Name)
		}
		self = self || id == a.cfg.Self
		ids = append(ids, id)
	}
	if !self {
		return false
	}
	sortIDs(ids)
	ids = uniqIDs(ids)
	if err := a.installLocked(divide(a.ring.Size, ids, a.capacity)); err != nil {
		a.log.Error("install ring", "err", err)
		return true
	}
	a.log.Info("ring formed from seeds", "peers", len(ids))
	return true
}

func uniqIDs(ids []peer.ID) []peer.ID {
	out := ids[:0]
	for i, id := range ids {
		if i == 0 || id != ids[i-1] {
			out = append(out, id)
		}
	}
	return out
}

// installLocked adopts a freshly divided ring (unless one arrived first, in
// which case the new one is merged like any message) and broadcasts it.
func (a *Allocator) installLocked(r Ring) error {
	if a.ring.Ready() {
		if r.Seed != a.ring.Seed {
			return fmt.Errorf("install ring %016x over %016x: %w", r.Seed, a.ring.Seed, ErrDifferentRing)
		}
		return nil
	}
	old := a.ring
	a.ring = r
	a.refreshFreeLocked()
	if err := a.commitLocked(&batch{seed: r.Seed, tokens: a.ring.Tokens}, nil); err != nil {
		a.ring = old
		return err
	}
	a.buildStateLocked()
	a.tr.Broadcast(a.built.Load().full)
	return nil
}

// statusLocked is the bootstrap status string.
func (a *Allocator) statusLocked() string {
	switch {
	case a.ring.Ready():
		return "ready"
	case a.cfg.Init.Mode == InitObserver:
		return "awaiting ring (observer)"
	case a.cfg.Init.Mode == InitSeed:
		return fmt.Sprintf("awaiting seed peers %v", a.cfg.Init.Seeds)
	}
	return fmt.Sprintf("awaiting consensus (known %d of quorum %d)", len(a.boot.heard), a.quorum())
}
