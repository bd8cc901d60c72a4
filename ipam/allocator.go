package ipam

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/peer"
)

// Transport carries ring messages between peers. gossip.Channel implements
// it.
type Transport interface {
	// Broadcast queues msg for eventual delivery to every live peer (best
	// effort: may be lost, duplicated, reordered). Never blocks. The
	// transport must not modify msg.
	Broadcast(msg []byte)
	// SendTo delivers msg to one peer reliably (TCP) or returns an error.
	// May block until ctx is done. Never called with this peer's own ID.
	SendTo(ctx context.Context, to peer.ID, msg []byte) error
}

// senders is the number of goroutines draining the unicast queue.
const senders = 8

// outMsg is a unicast queued for the sender goroutine, so that Merge never
// blocks on the network.
type outMsg struct {
	to  peer.ID
	msg []byte
}

// Allocator is one peer's share of the IPAM ring. Its methods are safe for
// concurrent use.
//
// Its state is split by concern, each part declared, with its invariants,
// in the file that uses it: allocations (allocate.go), paxosState
// (paxos.go), bootstrapState (bootstrap.go), requests (donate.go) and
// handoffState (handoff.go). Reclaim keeps no state of its own beyond its
// Paxos instances (see reclaim.go). The ring itself is the pure CRDT of
// ring.go: the Allocator feeds it, persists it and reads it.
type Allocator struct {
	cfg     Config
	tr      Transport
	log     *slog.Logger
	st      *store                     // committed to only under mu (see store.commit)
	changed chan struct{}              // cap 1, see Changed
	heldUp  chan struct{}              // cap 1: a held donation request is to be answered or dropped (donate.go)
	built   atomic.Pointer[builtState] // FullState and Summary, built together when asked after a change
	stale   atomic.Bool                // the ring changed since built (set under mu)
	out     chan outMsg                // unicasts for the sender goroutine
	done    chan struct{}              // closed by Close

	// mu is the one lock of the Allocator, on purpose: almost every
	// operation reads or writes the ring together with another part (an
	// allocation writes a token's free count and the allocations in one
	// store transaction, a merge checks the allocations, an acceptor step
	// reads the ring and writes the Paxos state, a donation reads the
	// allocations and writes the ring), and store commits must be
	// serialised anyway. Locks per part would need a lock order for each
	// such pair and would buy nothing: no one holds mu while waiting for
	// the network or a timer (unicasts are queued, broadcasts never block),
	// only during a store commit. The parts' types and their methods do not
	// lock: they expect the caller to hold mu.
	mu     sync.Mutex // guards following
	closed bool       // Close ran: Allocate, Release, GC, Merge and Reclaim return ErrClosed
	// ring is this peer's view of the CRDT. Every change is persisted by
	// commitLocked, or rolled back when the commit fails. Once Ready it
	// stays Ready with the same Seed. Every allocation lies in a run it
	// gives this peer (New warns about a persisted one that does not): a
	// merge that would take such a run away is refused
	// (ErrClaimOnAllocated), a donation gives free spans only, and Handoff
	// drops the allocations before giving anything away.
	ring  Ring
	peers map[peer.ID]member // the last SetPeers
	wake  chan struct{}      // closed and replaced on every change waiters care about
	gen   uint64             // counts the changes Changed signals: see Gen
	// changedAt is when Changed was last signalled (Status.Changed).
	changedAt time.Time
	// staleSince is when the built full state and summary began to lag
	// the ring (stale; staleLocked).
	staleSince time.Time

	allocs  allocations         // this peer's allocations (allocate.go)
	paxos   paxosState          // acceptor memory and our rounds in flight (paxos.go)
	boot    bootstrapState      // what other bootstrap proposers are doing (bootstrap.go)
	reqs    requests            // donation and handoff replies awaited (donate.go)
	held    map[peer.ID]heldReq // donation requests from peers not known yet (donate.go)
	handoff handoffState        // leaving, and to whom (handoff.go)
	refused map[peer.ID]Refusal // peers whose messages carried another range (rekey.go)
}

// New opens the store at cfg.DBPath and loads the persisted ring and
// allocations. Nothing is sent until Run.
func New(cfg Config, tr Transport) (*Allocator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "ipam")
	if cfg.Pool != "" {
		log = log.With("pool", cfg.Pool)
	}
	st, err := openStore(cfg.DBPath, cfg.Range, cfg.Self, cfg.NoSync)
	if err != nil {
		return nil, err
	}
	size := uint64(1) << (32 - cfg.Range.Bits())
	saved, err := st.load(size)
	if err != nil {
		st.close()
		return nil, err
	}
	a := &Allocator{
		cfg: cfg, tr: tr, log: log, st: st,
		changed: make(chan struct{}, 1),
		heldUp:  make(chan struct{}, 1),
		out:     make(chan outMsg, 1024),
		done:    make(chan struct{}),
		ring:    saved.ring,
		peers:   map[peer.ID]member{},
		wake:    make(chan struct{}),
		allocs:  newAllocations(saved.allocs, saved.names),
		paxos:   newPaxosState(saved.acceptors),
		boot:    bootstrapState{heard: map[peer.ID]bool{cfg.Self: true}},
		reqs:    requests{next: rand.Uint64(), replies: map[uint64]chan *message{}},
		held:    map[peer.ID]heldReq{},
		// A handoff interrupted by a restart resumes with the same peer.
		handoff: handoffState{leaving: saved.leaving, target: saved.target},
	}
	for id, off := range a.allocs.byID {
		if a.ring.Ready() && a.ring.Owner(off) != cfg.Self {
			log.Warn("persisted allocation outside our space", "id", id, "addr", a.addr(off))
		}
	}
	a.buildStateLocked()
	log.Info("ipam opened", "range", cfg.Range, "tokens", len(a.ring.Tokens), "allocations", len(a.allocs.byID))
	return a, nil
}

// Changed gets a value (non-blocking send, capacity 1) whenever the ring
// or ownership changes.
func (a *Allocator) Changed() <-chan struct{} { return a.changed }

// Gen returns a number that changes whenever the ring or ownership
// changes (whenever Changed is signalled): a caller that acts on Ranges
// compares it with the value it last acted on. Read it before Ranges.
func (a *Allocator) Gen() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.gen
}

// Syncs returns how many of the store's commits were synced to disk (an
// fdatasync each, or two): allocations and changes of our own space; the
// rest of the ring is written without.
func (a *Allocator) Syncs() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st.synced
}

// member is what the allocator keeps of a peer from SetPeers (the whole
// peer.Info is ten times larger, and it keeps one per peer of the mesh).
type member struct {
	name  string
	state peer.State
}

// SetPeers gives the current view of the mesh. Non-blocking: it never
// commits to the store (held donation requests of peers now up are
// answered by Run's goroutine, answerHeld).
func (a *Allocator) SetPeers(peers []peer.Info) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.peers = make(map[peer.ID]member, len(peers))
	for _, p := range peers {
		a.peers[p.ID] = member{name: p.Name, state: p.State}
	}
	for from, h := range a.held {
		if a.aliveLocked(from) || time.Since(h.at) >= a.cfg.RequestTimeout {
			select {
			case a.heldUp <- struct{}{}:
			default:
			}
			break
		}
	}
	a.wakeLocked()
}

// aliveLocked reports whether id is up in the last SetPeers.
func (a *Allocator) aliveLocked(id peer.ID) bool {
	if id == a.cfg.Self {
		return true
	}
	p, ok := a.peers[id]
	return ok && p.state.Up()
}

// liveLocked returns the IDs of live peers, self included, sorted.
func (a *Allocator) liveLocked() []peer.ID {
	out := []peer.ID{a.cfg.Self}
	for id := range a.peers {
		if id != a.cfg.Self && a.aliveLocked(id) {
			out = append(out, id)
		}
	}
	sortIDs(out)
	return out
}

// Run drives the timers: bootstrap rounds, the unicast sender and the
// periodic re-broadcast of this peer's tokens. It returns when ctx is done
// (or Close is called), after its goroutines have exited.
func (a *Allocator) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-a.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	var wg sync.WaitGroup
	// Several senders, so that one unicast to an unreachable peer (which
	// may block until RequestTimeout) does not hold up the others.
	for range senders {
		wg.Go(func() { a.sendLoop(ctx) })
	}
	wg.Go(func() { a.bootstrapLoop(ctx) })
	wg.Go(func() {
		var recheck <-chan time.Time
		for {
			select {
			case <-ctx.Done():
				return
			case <-a.heldUp:
			case <-recheck:
			}
			recheck = nil
			if a.answerHeld() > 0 && a.cfg.Reachable != nil {
				recheck = time.After(heldRecheck)
			}
		}
	})
	if a.cfg.RebroadcastInterval > 0 {
		wg.Go(func() {
			t := time.NewTicker(a.cfg.RebroadcastInterval)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					a.mu.Lock()
					own := a.ring.ownedBy(a.cfg.Self)
					a.broadcastLocked(own)
					a.mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return nil
}

func (a *Allocator) sendLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-a.out:
			sctx, cancel := context.WithTimeout(ctx, a.cfg.RequestTimeout)
			t0 := time.Now()
			if err := a.tr.SendTo(sctx, m.to, m.msg); err != nil {
				a.log.Debug("send failed", "to", m.to, "err", err)
			}
			if d := time.Since(t0); d > 100*time.Millisecond {
				a.log.Debug("slow send", "to", m.to, "took", d, "queued", len(a.out))
			}
			cancel()
		}
	}
}

// sendLocked queues a unicast; it never blocks (a full queue drops: every
// protocol here retries).
func (a *Allocator) sendLocked(to peer.ID, m *message) {
	m.Range, m.Seed = a.cfg.Range, a.ring.Seed
	select {
	case a.out <- outMsg{to: to, msg: m.encode()}:
	default:
		a.log.Warn("unicast queue full; message dropped", "to", to)
	}
}

// Close closes the store. Run returns soon after.
func (a *Allocator) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil
	}
	a.closed = true
	close(a.done)
	a.wakeLocked()
	if err := a.st.close(); err != nil {
		return fmt.Errorf("close ipam: %w", err)
	}
	return nil
}

// wakeLocked wakes every goroutine waiting for a change.
func (a *Allocator) wakeLocked() {
	close(a.wake)
	a.wake = make(chan struct{})
}

// changedLocked wakes waiters and notifies Changed.
func (a *Allocator) changedLocked() {
	a.wakeLocked()
	a.gen++
	a.changedAt = time.Now()
	select {
	case a.changed <- struct{}{}:
	default:
	}
}

// FullState returns the whole ring, encoded. It never blocks: after a
// change it is built if the allocator's lock is free, else the last one
// built is returned (at most staleMax old: a state this peer held, which
// anti-entropy and push-pull merge like any other).
func (a *Allocator) FullState() []byte {
	a.freshState()
	return a.built.Load().full
}

// builtState is the ring's encoded full state and its summary, from one
// build: a reader that loads it never pairs a summary with another ring.
type builtState struct{ full, summary []byte }

// staleMax bounds how long the built full state and summary may lag the
// ring: a commit builds them when they are older (readers that find the
// lock taken do not).
const staleMax = time.Second

// staleLocked records that the ring changed: FullState and Summary build
// theirs again when next asked, or this commit does if they have lagged
// staleMax. They were built at every commit: in a mass join a peer commits
// a merge for every new delta (each build a whole-ring encoding and
// summary, O(N)) while they are asked for about once a second
// (anti-entropy's digest and repairs, a joiner's push-pull).
func (a *Allocator) staleLocked() {
	now := time.Now()
	if !a.stale.Load() {
		a.staleSince = now
	}
	a.stale.Store(true)
	if now.Sub(a.staleSince) >= staleMax {
		a.buildStateLocked()
	}
}

// freshState builds the full state and summary if the ring changed since
// and the lock is free. The gossip handlers' contract (gossip.Handler,
// gossip.Summarizer) is not to block: a commit holds the lock across its
// write, and a synced one across an fdatasync.
func (a *Allocator) freshState() {
	if !a.stale.Load() || !a.mu.TryLock() {
		return
	}
	defer a.mu.Unlock()
	if a.stale.Load() {
		a.buildStateLocked()
	}
}

// buildStateLocked builds the full state and summary from the ring.
func (a *Allocator) buildStateLocked() {
	m := message{Kind: kindFull, Range: a.cfg.Range, Seed: a.ring.Seed, Tokens: a.ring.Tokens}
	a.built.Store(&builtState{full: m.encode(), summary: summarize(a.cfg.Range, &a.ring)})
	a.stale.Store(false)
}

// broadcastLocked sends tokens as deltas of at most deltaTokens tokens.
func (a *Allocator) broadcastLocked(ts []Token) {
	for len(ts) > 0 {
		n := min(len(ts), deltaTokens)
		m := message{Kind: kindDelta, Range: a.cfg.Range, Seed: a.ring.Seed, Tokens: ts[:n]}
		a.tr.Broadcast(m.encode())
		ts = ts[n:]
	}
}

// Merge applies a message from peer from. Bad input returns an error and
// changes nothing.
func (a *Allocator) Merge(from peer.ID, msg []byte) error {
	_, err := a.MergeNew(from, msg)
	return err
}

// MergeNew is Merge that also reports whether the message changed the
// ring (gossip relays only such broadcasts onward: gossip.Epidemic).
func (a *Allocator) MergeNew(from peer.ID, msg []byte) (bool, error) {
	m, err := decode(msg)
	if err != nil {
		return false, err
	}
	if from != a.cfg.Self {
		a.noteRange(from, m.Range)
	}
	if m.Range != a.cfg.Range {
		return false, fmt.Errorf("merge from %s: range %s, ours %s: %w", from, m.Range, a.cfg.Range, ErrDifferentRing)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return false, ErrClosed
	}
	if from == a.cfg.Self {
		return false, nil // our own broadcast echoed back
	}
	fresh := false
	switch m.Kind {
	case kindFull, kindDelta:
		var changed []Token
		changed, err = a.mergeTokensLocked(from, m)
		fresh = len(changed) > 0
	case kindPrepare, kindAccept:
		err = a.handleAcceptorLocked(from, m)
	case kindPromise, kindAccepted, kindNack:
		a.handleProposerReplyLocked(from, m)
	case kindChosen:
		err = a.handleChosenLocked(from, m)
	case kindDonateReq:
		err = a.handleDonateReqLocked(from, m)
	case kindDonateReply, kindHandoffAck:
		if len(m.Tokens) > 0 {
			_, err = a.mergeTokensLocked(from, m)
		}
		a.reqs.deliver(m)
	case kindHandoff:
		err = a.handleHandoffLocked(from, m)
	}
	if err != nil {
		return false, fmt.Errorf("merge from %s: %w", from, err)
	}
	return fresh, nil
}
