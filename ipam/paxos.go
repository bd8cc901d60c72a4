package ipam

// Single-decree Paxos over the Transport, after Weave Net's ipam/paxos but
// message-passing: the proposer sends Prepare/Accept by unicast and counts
// replies; acceptors persist their promise/acceptance before replying. One
// instance decides one value: the peers of the ring's first division
// (bootstrap), or the taker of a dead peer's space (reclaim, see reclaim.go).
//
// Safety is classic Paxos: any two quorums intersect, an acceptor never goes
// back on a promise (the state is in bbolt, so restarts do not make it
// forget), and a proposer adopts the highest accepted value it hears of.
// Liveness: randomised pauses between rounds, and a Nack tells a proposer
// the ballot to beat.
//
// Phase 1 waits for every participant until RequestTimeout once a quorum
// has promised: peers that already have a ring answer Nack(flagHasRing) and
// send it, observers and seed-mode peers answer Nack without a flag, so a
// proposer never forms a second ring while one exists among the peers it
// can reach.

import (
	"context"
	"slices"
	"time"

	"github.com/weftmesh/weft/peer"
)

type reply struct {
	from peer.ID
	m    *message
}

// proposal is one of our Paxos rounds in flight.
type proposal struct {
	ballot  ballot
	replies chan reply
}

// paxosState is this peer's part in every Paxos instance, as acceptor and
// as proposer. Guarded by Allocator.mu.
//
// acceptors is what our acceptor promised and accepted, per instance. An
// entry changes only after the store has persisted its new value, and
// before the reply that depends on it is sent, so a restart never makes
// the acceptor go back on a promise (New loads them again). maxBallot is
// at least every ballot number stored in acceptors, received in a Prepare,
// Accept or Nack, or used by us: our next ballot (maxBallot+1) beats every
// ballot we know of. proposals holds our latest round per instance; a round
// removes its entry when it ends, unless a later round replaced it.
type paxosState struct {
	acceptors map[instanceKey]*acceptorState
	proposals map[instanceKey]*proposal
	maxBallot uint32
}

// newPaxosState resumes from the acceptor states loaded from the store.
func newPaxosState(acc map[instanceKey]*acceptorState) paxosState {
	p := paxosState{acceptors: acc, proposals: map[instanceKey]*proposal{}}
	for _, s := range acc {
		p.seen(s.Promised.N)
		p.seen(s.Accepted.N)
	}
	return p
}

// seen raises maxBallot to ballot number n.
func (p *paxosState) seen(n uint32) { p.maxBallot = max(p.maxBallot, n) }

// next returns a ballot of ours above every ballot we know of.
func (p *paxosState) next(self peer.ID) ballot {
	p.maxBallot++
	return ballot{N: p.maxBallot, P: self}
}

// acceptorStepLocked runs the acceptor for m (Prepare or Accept) and
// returns the reply to send, or nil.
func (a *Allocator) acceptorStepLocked(from peer.ID, m *message) (*message, error) {
	a.paxos.seen(m.Ballot.N)
	nack := &message{Kind: kindNack, Key: m.Key, Ballot: m.Ballot}
	switch m.Key.Kind {
	case instBootstrap:
		if from != a.cfg.Self && m.Ballot.N > 0 {
			a.boot.heardFrom(from, m.Kind == kindPrepare)
		}
		if a.ring.Ready() {
			nack.Flags = flagHasRing
			return nack, nil
		}
		if m.Ballot.N == 0 {
			return nil, nil // a waiting peer's ring query; we have none
		}
		if a.cfg.Init.Mode != InitConsensus {
			return nack, nil // observers and seed peers take no part
		}
	case instReclaim:
		if !a.ring.Ready() {
			return nil, nil
		}
		if a.aliveLocked(m.Key.Dead) {
			nack.Flags = flagAlive
			return nack, nil
		}
		if hashTokens(a.ring.ownedBy(m.Key.Dead)) != m.Key.Hash {
			nack.Flags = flagMismatch
			return nack, nil
		}
	default:
		return nil, ErrBadMessage
	}
	s := a.paxos.acceptors[m.Key]
	if s == nil {
		s = &acceptorState{}
	}
	next := *s
	var out *message
	switch m.Kind {
	case kindPrepare:
		if m.Ballot.less(s.Promised) {
			nack.Accepted = s.Promised
			return nack, nil
		}
		next.Promised = m.Ballot
		out = &message{Kind: kindPromise, Key: m.Key, Ballot: m.Ballot, Accepted: s.Accepted, Value: s.Value}
	case kindAccept:
		if m.Ballot.less(s.Promised) || len(m.Value) == 0 {
			nack.Accepted = s.Promised
			return nack, nil
		}
		next.Promised, next.Accepted, next.Value = m.Ballot, m.Ballot, slices.Clone(m.Value)
		out = &message{Kind: kindAccepted, Key: m.Key, Ballot: m.Ballot}
	}
	key := m.Key
	if err := a.st.commit(&batch{acceptor: &key, accState: next}); err != nil {
		return nil, err
	}
	a.paxos.acceptors[m.Key] = &next
	return out, nil
}

func (a *Allocator) handleAcceptorLocked(from peer.ID, m *message) error {
	r, err := a.acceptorStepLocked(from, m)
	if err != nil || r == nil {
		return err
	}
	if r.Kind == kindNack && r.Flags&(flagHasRing|flagMismatch) != 0 {
		a.sendLocked(from, &message{Kind: kindFull, Tokens: a.ring.Tokens})
		if m.Ballot.N == 0 {
			return nil // a ring query: the ring is the answer (a unicast is a TCP connection each)
		}
	}
	a.sendLocked(from, r)
	return nil
}

func (a *Allocator) handleProposerReplyLocked(from peer.ID, m *message) {
	if m.Key.Kind == instBootstrap && m.Kind == kindPromise {
		a.boot.heardFrom(from, false)
	}
	if m.Kind == kindNack {
		a.paxos.seen(m.Accepted.N)
	}
	p, ok := a.paxos.proposals[m.Key]
	if !ok || p.ballot != m.Ballot {
		return
	}
	select {
	case p.replies <- reply{from: from, m: m}:
	default:
	}
}

// deliverLocked sends m to `to`, running our own acceptor in place for self.
func (a *Allocator) deliverLocked(p *proposal, to peer.ID, m *message) {
	if to != a.cfg.Self {
		a.sendLocked(to, m)
		return
	}
	r, err := a.acceptorStepLocked(to, m)
	if err != nil {
		a.log.Warn("local acceptor", "err", err)
		return
	}
	if r != nil {
		p.replies <- reply{from: to, m: r}
	}
}

// paxosRound runs one ballot of instance key among participants and returns
// the chosen value. value computes our own proposal from the promisers when
// no acceptor has accepted anything yet.
func (a *Allocator) paxosRound(ctx context.Context, key instanceKey, participants []peer.ID, quorum int,
	value func(promisers []peer.ID) []peer.ID) ([]peer.ID, error) {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil, ErrClosed
	}
	p := &proposal{ballot: a.paxos.next(a.cfg.Self), replies: make(chan reply, 4*len(participants)+4)}
	a.paxos.proposals[key] = p
	for _, to := range participants {
		a.deliverLocked(p, to, &message{Kind: kindPrepare, Key: key, Ballot: p.ballot})
	}
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		if a.paxos.proposals[key] == p {
			delete(a.paxos.proposals, key)
		}
		a.mu.Unlock()
	}()

	timeout := time.NewTimer(a.cfg.RequestTimeout)
	defer timeout.Stop()
	promises := map[peer.ID]*message{}
	answered := map[peer.ID]bool{}
	for len(answered) < len(participants) {
		var r reply
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timeout.C:
			if len(promises) >= quorum {
				goto phase2
			}
			return nil, errNoQuorum
		case r = <-p.replies:
		}
		switch r.m.Kind {
		case kindPromise:
			promises[r.from] = r.m
			answered[r.from] = true
		case kindNack:
			switch {
			case r.m.Flags&flagAlive != 0:
				return nil, ErrPeerAlive
			case r.m.Flags&flagMismatch != 0:
				return nil, errMismatch
			case r.m.Flags&flagHasRing != 0:
				return nil, errHasRing
			case r.m.Accepted.N != 0:
				return nil, errPreempted
			}
			answered[r.from] = true // takes no part
		}
	}
	if len(promises) < quorum {
		return nil, errNoQuorum
	}
phase2:
	var v []peer.ID
	var best ballot
	for _, pr := range promises {
		if len(pr.Value) > 0 && best.less(pr.Accepted) {
			best, v = pr.Accepted, pr.Value
		}
	}
	if v == nil {
		ids := make([]peer.ID, 0, len(promises))
		for id := range promises {
			ids = append(ids, id)
		}
		sortIDs(ids)
		v = value(ids)
	}
	a.mu.Lock()
	for id := range promises {
		a.deliverLocked(p, id, &message{Kind: kindAccept, Key: key, Ballot: p.ballot, Value: v})
	}
	a.mu.Unlock()
	timeout.Reset(a.cfg.RequestTimeout)
	accepted := map[peer.ID]bool{}
	for len(accepted) < quorum {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timeout.C:
			return nil, errNoQuorum
		case r := <-p.replies:
			switch r.m.Kind {
			case kindAccepted:
				accepted[r.from] = true
			case kindNack:
				if r.m.Accepted.N != 0 {
					return nil, errPreempted
				}
			}
		}
	}
	return v, nil
}
