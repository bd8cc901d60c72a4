// Package dnstest holds fakes for testing weft's dns package and its users:
// a recording miekg ResponseWriter, and an in-memory Bus that plays gossip
// between several record-set replicas (with loss and reordering on demand).
//
//	w := dnstest.NewRecorder("udp")
//	srv.ServeDNS(w, query)
//	resp := w.Msg // what the server wrote
//
//	bus := dnstest.NewBus()
//	srvA, _ := dns.New(cfgA, bus.Transport(idA)); bus.Join(idA, srvA)
package dnstest

import (
	"net"
	"sync"

	miekg "github.com/miekg/dns"
	"github.com/weftmesh/weft/peer"
)

// Recorder is a miekg ResponseWriter that keeps what was written.
type Recorder struct {
	Local, Remote net.Addr
	Msg           *miekg.Msg // last message written with WriteMsg (or unpacked from Write)
	Writes        int        // number of writes
}

var _ miekg.ResponseWriter = (*Recorder)(nil)

// NewRecorder returns a recorder whose client is on 127.0.0.1 over netw
// ("udp" or "tcp").
func NewRecorder(netw string) *Recorder {
	r := &Recorder{}
	if netw == "tcp" {
		r.Local, r.Remote = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
	} else {
		r.Local, r.Remote = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53}, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
	}
	return r
}

func (r *Recorder) LocalAddr() net.Addr  { return r.Local }
func (r *Recorder) RemoteAddr() net.Addr { return r.Remote }
func (r *Recorder) Network() string      { return r.Local.Network() }

// WriteMsg records m.
func (r *Recorder) WriteMsg(m *miekg.Msg) error {
	r.Msg = m
	r.Writes++
	return nil
}

// Write records a packed message.
func (r *Recorder) Write(b []byte) (int, error) {
	m := new(miekg.Msg)
	if err := m.Unpack(b); err != nil {
		return 0, err
	}
	r.Msg = m
	r.Writes++
	return len(b), nil
}

func (r *Recorder) Close() error        { return nil }
func (r *Recorder) TsigStatus() error   { return nil }
func (r *Recorder) TsigTimersOnly(bool) {}
func (r *Recorder) Hijack()             {}

// Merger is the receiving side of a replica (dns.Server implements it).
type Merger interface {
	Merge(from peer.ID, msg []byte) error
	FullState() []byte
}

// Bus delivers broadcasts between replicas in memory. By default every
// broadcast reaches every other joined replica at once; Hold queues them
// instead, for tests that reorder, drop or partition.
type Bus struct {
	mu      sync.Mutex // guards following
	members map[peer.ID]Merger
	hold    bool
	queue   []Message
}

// Message is one queued broadcast.
type Message struct {
	From peer.ID
	To   peer.ID
	Data []byte
}

// NewBus returns an empty bus.
func NewBus() *Bus { return &Bus{members: make(map[peer.ID]Merger)} }

// Join adds a replica.
func (b *Bus) Join(id peer.ID, m Merger) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.members[id] = m
}

// Hold makes broadcasts queue until Take.
func (b *Bus) Hold(on bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.hold = on
}

// Take returns and clears the queued messages.
func (b *Bus) Take() []Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	q := b.queue
	b.queue = nil
	return q
}

// Deliver hands one message to its receiver and returns Merge's error.
func (b *Bus) Deliver(m Message) error {
	b.mu.Lock()
	dst := b.members[m.To]
	b.mu.Unlock()
	if dst == nil {
		return nil
	}
	return dst.Merge(m.From, m.Data)
}

// AntiEntropy exchanges full state between every pair of replicas, as
// gossip's push-pull does.
func (b *Bus) AntiEntropy() error {
	b.mu.Lock()
	ms := make(map[peer.ID]Merger, len(b.members))
	for id, m := range b.members {
		ms[id] = m
	}
	b.mu.Unlock()
	for from, src := range ms {
		st := src.FullState()
		for to, dst := range ms {
			if to != from {
				if err := dst.Merge(from, append([]byte(nil), st...)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// Transport returns the Transport of replica id.
func (b *Bus) Transport(id peer.ID) *Sender { return &Sender{bus: b, id: id} }

// Sender is one replica's end of the bus; it implements dns.Transport.
type Sender struct {
	bus *Bus
	id  peer.ID
}

// Broadcast delivers msg to every other replica (or queues it when held).
func (s *Sender) Broadcast(msg []byte) {
	b := s.bus
	b.mu.Lock()
	var targets []Message
	for id := range b.members {
		if id != s.id {
			targets = append(targets, Message{From: s.id, To: id, Data: append([]byte(nil), msg...)})
		}
	}
	if b.hold {
		b.queue = append(b.queue, targets...)
		targets = nil
	}
	b.mu.Unlock()
	for _, m := range targets {
		_ = b.Deliver(m) // a replica rejects only malformed input, which a replica never sends
	}
}
