package gossip

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/memberlist"
	"github.com/weftmesh/weft/peer"
)

// Handler is a replicated state that rides on gossip (the IPAM ring, the
// DNS record set). The mesh calls it; it never calls the mesh back from
// these methods.
type Handler interface {
	// FullState returns the handler's whole state, encoded, for push-pull
	// anti-entropy. It is called on memberlist's goroutines, so it must be
	// fast and must not block on I/O or on the mesh. The mesh does not keep
	// or modify the slice.
	FullState() []byte
	// Merge applies a message that peer `from` originated: a broadcast
	// delta, a unicast message, or that peer's FullState. The mesh calls
	// Merge from one goroutine per channel, one call at a time, with a
	// slice the handler may keep. An error means bad input: the mesh logs
	// it and drops the message; the handler must leave its state unchanged.
	Merge(from peer.ID, msg []byte) error
}

// Channel is a named replicated-state channel. Its methods are safe for
// concurrent use.
type Channel struct {
	mesh    *Mesh
	name    string
	handler Handler
	inbox   inbox
	dropped atomic.Uint64 // messages dropped because the inbox was full
	errors  atomic.Uint64 // messages the handler rejected
}

type inbound struct {
	from  peer.ID
	msg   []byte
	relay []byte // the broadcast frame to forward if msg is new; nil = not relayed
}

// inbox is a channel's queue of received messages, bounded by max. It is
// a slice that grows as messages come and is handed over whole to the
// channel's goroutine, not a buffered chan: a chan allocates its whole
// buffer up front (InboxSize × 56 bytes, ~230 KiB per channel), which an
// idle peer never uses.
type inbox struct {
	max   int
	ready chan struct{} // capacity 1: q is not empty

	mu sync.Mutex // guards q
	q  []inbound
}

func (b *inbox) init(max int) { b.max, b.ready = max, make(chan struct{}, 1) }

// push queues in; false when the inbox is full. It never blocks.
func (b *inbox) push(in inbound) bool {
	b.mu.Lock()
	if len(b.q) >= b.max {
		b.mu.Unlock()
		return false
	}
	b.q = append(b.q, in)
	b.mu.Unlock()
	select {
	case b.ready <- struct{}{}:
	default:
	}
	return true
}

// take returns every queued message, oldest first, and empties the inbox.
func (b *inbox) take() []inbound {
	b.mu.Lock()
	defer b.mu.Unlock()
	q := b.q
	b.q = nil
	return q
}

// broadcastLimit is the largest message sent through memberlist's UDP
// piggyback queue; larger ones go by TCP to each alive peer. memberlist
// packets are at most ~1400 bytes, shared with its own messages.
const broadcastLimit = 1000

// Broadcast queues msg for eventual delivery to every live peer. Delivery
// is best effort (lost, duplicated and reordered messages are possible; the
// push-pull anti-entropy repairs them). It never blocks.
func (c *Channel) Broadcast(msg []byte) {
	if len(msg) > MaxMessage {
		c.mesh.log.Warn("broadcast dropped: too large", "channel", c.name, "bytes", len(msg))
		return
	}
	f := appendFrame(nil, frame{kind: kindBroadcast, channel: c.name, origin: c.mesh.cfg.ID, payload: msg})
	if len(f) <= broadcastLimit {
		c.mesh.seen.add(f) // a relay of our own frame coming back is not new
		c.mesh.enqueue(f)
		return
	}
	select {
	case c.mesh.bigOut <- f:
	default:
		c.mesh.log.Warn("large broadcast dropped: sender busy", "channel", c.name, "bytes", len(msg))
	}
}

// SendTo delivers msg to one peer over TCP. It blocks until the message is
// written or ctx is done.
func (c *Channel) SendTo(ctx context.Context, to peer.ID, msg []byte) error {
	if len(msg) > MaxMessage {
		return fmt.Errorf("send to %s on %s: %d bytes: %w", to, c.name, len(msg), ErrTooLarge)
	}
	node := c.mesh.nodeByID(to)
	if node == nil {
		return fmt.Errorf("send to %s on %s: %w", to, c.name, ErrUnknownPeer)
	}
	f := appendFrame(nil, frame{kind: kindUnicast, channel: c.name, origin: c.mesh.cfg.ID, payload: msg})
	done := make(chan error, 1)
	go func() { done <- c.mesh.ml.SendReliable(node, f) }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("send to %s on %s: %w", to, c.name, err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("send to %s on %s: %w", to, c.name, ctx.Err())
	}
}

// Name returns the channel's name.
func (c *Channel) Name() string { return c.name }

// Dropped returns how many received messages were dropped because the
// handler fell behind.
func (c *Channel) Dropped() uint64 { return c.dropped.Load() }

// Rejected returns how many received messages the handler rejected.
func (c *Channel) Rejected() uint64 { return c.errors.Load() }

// deliver hands a message to the channel's goroutine without blocking.
// relay, when not nil, is the broadcast frame that carried it: the channel
// forwards it if the message is new (see epidemic.go).
func (c *Channel) deliver(from peer.ID, payload, relay []byte) {
	in := inbound{from: from}
	if relay != nil {
		if _, ok := c.handler.(Epidemic); !ok && !c.mesh.seen.add(relay) {
			return // a duplicate: already merged and relayed
		}
		in.relay = append([]byte(nil), relay...)
		in.msg = in.relay[len(relay)-len(payload):]
	} else {
		in.msg = append([]byte(nil), payload...)
	}
	if !c.inbox.push(in) {
		c.dropped.Add(1)
	}
}

// merge applies one received message and relays it if it was new.
func (c *Channel) merge(in inbound) error {
	if in.relay == nil {
		return c.handler.Merge(in.from, in.msg)
	}
	fresh := true // not Epidemic: deliver let only unseen frames through
	var err error
	if e, ok := c.handler.(Epidemic); ok {
		fresh, err = e.MergeNew(in.from, in.msg)
	} else {
		err = c.handler.Merge(in.from, in.msg)
	}
	if err == nil && fresh {
		c.mesh.relayed.Add(1)
		c.mesh.enqueue(in.relay)
	}
	return err
}

// run applies received messages until ctx is done.
func (c *Channel) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.inbox.ready:
			for _, in := range c.inbox.take() {
				if ctx.Err() != nil {
					return // stopping: the handler may be closed already
				}
				if err := c.merge(in); err != nil {
					c.errors.Add(1)
					c.mesh.log.Warn("rejected message", "channel", c.name, "from", in.from, "err", err)
				}
			}
		}
	}
}

// maxQueued bounds memberlist's broadcast queue: beyond it the oldest
// messages (those already retransmitted the most) are dropped; anti-entropy
// repairs what they carried.
const maxQueued = 4096

// enqueue queues a frame for epidemic transmission.
func (m *Mesh) enqueue(f []byte) {
	m.queue.QueueBroadcast(rawBroadcast(f))
	if m.queue.NumQueued() > maxQueued {
		m.queue.Prune(maxQueued)
	}
}

// rawBroadcast is a memberlist.Broadcast that never invalidates another:
// every channel message is a distinct delta.
type rawBroadcast []byte

func (b rawBroadcast) Invalidates(memberlist.Broadcast) bool { return false }
func (b rawBroadcast) Message() []byte                       { return b }
func (b rawBroadcast) Finished()                             {}
