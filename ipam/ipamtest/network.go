// Package ipamtest provides an in-memory network for ipam.Allocators: a
// Transport per peer whose broadcasts can be lost, duplicated and reordered,
// unicasts that fail across a partition, partitions and heals, and
// push-pull anti-entropy on demand.
//
//	n := ipamtest.NewNetwork(1)
//	a, _ := ipam.New(cfg, n.Endpoint(cfg.Self))
//	n.Attach(cfg.Self, a)
//	n.Partition([]peer.ID{id1}, []peer.ID{id2, id3}); n.Heal(); n.Sync()
package ipamtest

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/weftmesh/weft/ipam"
	"github.com/weftmesh/weft/peer"
)

// Handler is the part of an Allocator the network delivers to (the same
// shape as gossip's Handler).
type Handler interface {
	FullState() []byte
	Merge(from peer.ID, msg []byte) error
}

// ErrUnreachable is SendTo's error across a partition or to a detached peer.
var ErrUnreachable = errors.New("ipamtest: peer unreachable")

// Network connects Endpoints in memory. Safe for concurrent use.
type Network struct {
	wg sync.WaitGroup

	mu       sync.Mutex // guards following
	rnd      *rand.Rand
	nodes    map[peer.ID]*node
	group    map[peer.ID]int // partition group; absent = 0
	loss     float64
	dup      float64
	maxDelay time.Duration
	inflight int // timers pending + queued + being merged
	closed   bool
	rejected []error
}

type node struct {
	h     Handler
	queue []delivery
	cond  *sync.Cond
	stop  bool
}

type delivery struct {
	from peer.ID
	msg  []byte
}

// NewNetwork returns an empty network with no faults.
func NewNetwork(seed uint64) *Network {
	return &Network{
		rnd:   rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		nodes: map[peer.ID]*node{},
		group: map[peer.ID]int{},
	}
}

// SetFaults sets the broadcast loss and duplication probabilities and the
// maximum random delay of every delivery (which reorders messages).
func (n *Network) SetFaults(loss, dup float64, maxDelay time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.loss, n.dup, n.maxDelay = loss, dup, maxDelay
}

// Attach starts delivering id's messages to h, one Merge at a time.
func (n *Network) Attach(id peer.ID, h Handler) {
	n.mu.Lock()
	defer n.mu.Unlock()
	nd := &node{h: h, cond: sync.NewCond(&n.mu)}
	n.nodes[id] = nd
	n.wg.Go(func() { n.loop(id, nd) })
}

// Detach stops deliveries to id (a crash or shutdown); queued messages are
// dropped.
func (n *Network) Detach(id peer.ID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if nd, ok := n.nodes[id]; ok {
		n.inflight -= len(nd.queue)
		nd.queue, nd.stop = nil, true
		nd.cond.Broadcast()
		delete(n.nodes, id)
	}
}

func (n *Network) loop(id peer.ID, nd *node) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for {
		for len(nd.queue) == 0 && !nd.stop {
			nd.cond.Wait()
		}
		if nd.stop {
			return
		}
		d := nd.queue[0]
		nd.queue = nd.queue[1:]
		n.mu.Unlock()
		err := nd.h.Merge(d.from, d.msg)
		n.mu.Lock()
		n.inflight--
		if err != nil {
			n.rejected = append(n.rejected, err)
		}
	}
}

// Rejected returns the errors Merge returned so far.
func (n *Network) Rejected() []error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]error(nil), n.rejected...)
}

// Partition splits the network into groups; peers in no group form one
// more group together.
func (n *Network) Partition(groups ...[]peer.ID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.group = map[peer.ID]int{}
	for i, g := range groups {
		for _, id := range g {
			n.group[id] = i + 1
		}
	}
}

// Heal removes every partition.
func (n *Network) Heal() { n.Partition() }

// Connected reports whether a and b can talk.
func (n *Network) Connected(a, b peer.ID) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.group[a] == n.group[b]
}

// enqueueLocked schedules a delivery after a random delay.
func (n *Network) enqueueLocked(from, to peer.ID, msg []byte) {
	if n.closed {
		return
	}
	var d time.Duration
	if n.maxDelay > 0 {
		d = time.Duration(n.rnd.Int64N(int64(n.maxDelay)))
	}
	n.inflight++
	if d == 0 {
		n.deliverLocked(from, to, msg)
		return
	}
	time.AfterFunc(d, func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		n.deliverLocked(from, to, msg)
	})
}

func (n *Network) deliverLocked(from, to peer.ID, msg []byte) {
	nd, ok := n.nodes[to]
	if !ok || n.closed || n.group[from] != n.group[to] {
		n.inflight--
		return
	}
	nd.queue = append(nd.queue, delivery{from: from, msg: msg})
	nd.cond.Signal()
}

// Sync runs one push-pull anti-entropy round: every attached peer receives
// every reachable peer's full state.
func (n *Network) Sync() {
	n.mu.Lock()
	defer n.mu.Unlock()
	hs := map[peer.ID]Handler{}
	for id, nd := range n.nodes {
		hs[id] = nd.h
	}
	n.mu.Unlock()
	states := map[peer.ID][]byte{}
	for id, h := range hs {
		states[id] = h.FullState()
	}
	n.mu.Lock()
	for from, st := range states {
		for to := range states {
			if from != to && n.group[from] == n.group[to] {
				n.enqueueLocked(from, to, st)
			}
		}
	}
}

// WaitIdle waits until no message is in flight, or ctx is done.
func (n *Network) WaitIdle(ctx context.Context) error {
	for {
		n.mu.Lock()
		idle := n.inflight == 0
		n.mu.Unlock()
		if idle {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// Close stops every delivery goroutine and waits for them.
func (n *Network) Close() {
	n.mu.Lock()
	n.closed = true
	for id, nd := range n.nodes {
		nd.stop = true
		nd.cond.Broadcast()
		delete(n.nodes, id)
	}
	n.mu.Unlock()
	n.wg.Wait()
}

// Endpoint returns id's Transport.
func (n *Network) Endpoint(id peer.ID) *Endpoint { return &Endpoint{n: n, id: id} }

// Endpoint is one peer's ipam.Transport on a Network.
type Endpoint struct {
	n  *Network
	id peer.ID
}

var _ ipam.Transport = (*Endpoint)(nil)

// Broadcast sends msg to every other attached, reachable peer, subject to
// loss, duplication and delay.
func (e *Endpoint) Broadcast(msg []byte) {
	n := e.n
	n.mu.Lock()
	defer n.mu.Unlock()
	for to := range n.nodes {
		if to == e.id || n.group[to] != n.group[e.id] {
			continue
		}
		if n.rnd.Float64() < n.loss {
			continue
		}
		n.enqueueLocked(e.id, to, msg)
		if n.rnd.Float64() < n.dup {
			n.enqueueLocked(e.id, to, msg)
		}
	}
}

// SendTo delivers msg to one peer (never lost, may be delayed) or fails if
// it is detached or partitioned away.
func (e *Endpoint) SendTo(ctx context.Context, to peer.ID, msg []byte) error {
	n := e.n
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.nodes[to]; !ok || n.group[to] != n.group[e.id] || to == e.id {
		return ErrUnreachable
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	n.enqueueLocked(e.id, to, msg)
	return nil
}
