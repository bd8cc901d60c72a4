// Package gossiptest provides an in-memory network for memberlist, so that
// gossip, ipam and dns tests run many peers in one process without sockets.
//
// Unlike memberlist's MockNetwork it is safe to grow while nodes gossip,
// never blocks a sender (a full or closed receiver drops the packet, as UDP
// would), fails dials to shut-down or partitioned peers at once, and can cut
// and heal links between groups of peers. Optionally it delays datagrams
// (Latency) and loses them (Loss); it counts every byte each transport
// sends and receives (the scale simulator, internal/sim, runs on it).
//
//	var n gossiptest.Network
//	tr := n.NewTransport("p1")      // memberlist.Config.Transport = tr
//	n.Partition([]string{"p1"}, []string{"p2", "p3"})
//	n.Heal()
package gossiptest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// ErrUnreachable is returned by dials to a peer that is gone or cut off.
var ErrUnreachable = errors.New("gossiptest: peer unreachable")

// Network is a set of in-memory transports. The zero value is ready; set
// Latency and Loss before the first transport.
type Network struct {
	Latency time.Duration // datagram delivery delay (and a stream dial's)
	Loss    float64       // probability that a datagram is lost
	// Blackhole makes a dial to a gone or cut-off peer wait out its
	// timeout, as TCP does through a cut cable, instead of failing at once.
	Blackhole bool

	mu     sync.RWMutex // guards following
	byAddr map[string]*Transport
	byName map[string]*Transport
	next   int
	cut    map[[2]string]bool // name pairs that cannot talk
	group  map[string]int     // name -> partition group; absent = 0
}

// NewTransport returns a transport with a unique address 127.0.0.1:N.
func (n *Network) NewTransport(name string) *Transport {
	n.mu.Lock()
	n.next++
	ap := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(n.next))
	n.mu.Unlock()
	return n.NewTransportAt(name, ap)
}

// NewTransportAt returns a transport with address ap, so that peers have
// distinct underlay addresses.
func (n *Network) NewTransportAt(name string, ap netip.AddrPort) *Transport {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.byAddr == nil {
		n.byAddr, n.byName, n.cut, n.group = map[string]*Transport{}, map[string]*Transport{}, map[[2]string]bool{}, map[string]int{}
	}
	t := &Transport{
		net:      n,
		name:     name,
		addr:     ap.String(),
		ap:       ap,
		packetCh: make(chan *memberlist.Packet, 4096),
		streamCh: make(chan net.Conn, 256),
		done:     make(chan struct{}),
	}
	n.byAddr[t.addr] = t
	n.byName[name] = t
	return t
}

// Partition cuts every link between a peer of group a and one of group b.
func (n *Network) Partition(a, b []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, x := range a {
		for _, y := range b {
			n.cut[[2]string{x, y}] = true
			n.cut[[2]string{y, x}] = true
		}
	}
}

// SetGroup puts the peer named name in partition group g: peers of
// different groups cannot reach each other (every peer starts in group 0).
// Unlike Partition, it costs one entry per peer, whatever the cut.
func (n *Network) SetGroup(name string, g int) {
	n.mu.Lock()
	if n.group == nil {
		n.group = map[string]int{}
	}
	n.group[name] = g
	n.mu.Unlock()
}

// Heal restores every link: no cut, every peer in group 0.
func (n *Network) Heal() {
	n.mu.Lock()
	n.cut, n.group = map[[2]string]bool{}, map[string]int{}
	n.mu.Unlock()
}

func (n *Network) route(from *Transport, a memberlist.Address) (*Transport, error) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	dest := n.byAddr[a.Addr]
	if a.Name != "" {
		if d := n.byName[a.Name]; d != nil {
			dest = d
		}
	}
	if dest == nil || dest.closed() || from.closed() || n.cut[[2]string{from.name, dest.name}] || n.group[from.name] != n.group[dest.name] {
		return nil, fmt.Errorf("%w: %s", ErrUnreachable, a)
	}
	return dest, nil
}

// Transport is one peer's memberlist transport on a Network.
type Transport struct {
	net      *Network
	name     string
	addr     string
	ap       netip.AddrPort
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	once     sync.Once
	done     chan struct{}
	sent     atomic.Uint64 // bytes sent: datagrams and stream writes
	recv     atomic.Uint64 // bytes received: datagrams and stream reads
	dials    atomic.Uint64 // stream dials begun
	streamed atomic.Uint64 // bytes sent and received on streams (part of sent+recv)
	full     atomic.Uint64 // datagrams sent of FullDatagram bytes or more
}

// FullDatagram is the size from which a datagram counts as full: memberlist
// fills a gossip packet with queued broadcasts up to its 1,400-byte buffer,
// and probes and digests alone stay far below it.
const FullDatagram = 1000

var _ memberlist.NodeAwareTransport = (*Transport)(nil)

// Addr returns the transport's address, to join it.
func (t *Transport) Addr() string { return t.addr }

// Bytes returns the bytes sent and received so far.
func (t *Transport) Bytes() (sent, recv uint64) { return t.sent.Load(), t.recv.Load() }

// StreamBytes returns the bytes sent and received on streams so far
// (memberlist's TCP: push-pulls, large messages); Bytes includes them.
func (t *Transport) StreamBytes() uint64 { return t.streamed.Load() }

// FullDatagrams returns how many datagrams of FullDatagram bytes or more
// the transport sent: packets memberlist filled with a backlog of
// broadcasts.
func (t *Transport) FullDatagrams() uint64 { return t.full.Load() }

// Dials returns how many stream dials the transport has begun.
func (t *Transport) Dials() uint64 { return t.dials.Load() }

func (t *Transport) closed() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

// FinalAdvertiseAddr implements memberlist.Transport.
func (t *Transport) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	return net.IP(t.ap.Addr().AsSlice()), int(t.ap.Port()), nil
}

// WriteTo implements memberlist.Transport.
func (t *Transport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

// WriteToAddress delivers a packet after the network's latency, or drops
// it like UDP would.
func (t *Transport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	now := time.Now()
	t.sent.Add(uint64(len(b)))
	if len(b) >= FullDatagram {
		t.full.Add(1)
	}
	dest, err := t.net.route(t, a)
	if err != nil || (t.net.Loss > 0 && rand.Float64() < t.net.Loss) {
		return now, nil // a lost datagram is not an error
	}
	p := &memberlist.Packet{Buf: append([]byte(nil), b...), From: addr(t.addr), Timestamp: now}
	deliver := func() {
		select {
		case dest.packetCh <- p:
			dest.recv.Add(uint64(len(p.Buf)))
		case <-dest.done:
		default:
		}
	}
	if t.net.Latency > 0 {
		time.AfterFunc(t.net.Latency, deliver)
	} else {
		deliver()
	}
	return now, nil
}

// PacketCh implements memberlist.Transport.
func (t *Transport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

// DialTimeout implements memberlist.Transport.
func (t *Transport) DialTimeout(a string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: a}, timeout)
}

// DialAddressTimeout opens an in-memory stream, or fails at once.
func (t *Transport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	t.dials.Add(1)
	dest, err := t.net.route(t, a)
	if err != nil {
		if t.net.Blackhole {
			time.Sleep(timeout)
		}
		return nil, err
	}
	if t.net.Latency > 0 {
		time.Sleep(t.net.Latency) // the SYN's round trip, roughly
	}
	local, remote := net.Pipe()
	select {
	case dest.streamCh <- &countConn{Conn: remote, sent: &dest.sent, recv: &dest.recv, both: &dest.streamed}:
		if dest.closed() {
			dest.drain() // nobody will accept it: fail the dialer's writes
		}
		return &countConn{Conn: local, sent: &t.sent, recv: &t.recv, both: &t.streamed}, nil
	case <-dest.done:
	case <-time.After(timeout):
	}
	local.Close()
	remote.Close()
	return nil, fmt.Errorf("%w: %s", ErrUnreachable, a)
}

// StreamCh implements memberlist.Transport.
func (t *Transport) StreamCh() <-chan net.Conn { return t.streamCh }

// Shutdown makes the transport unreachable. Streams dialed to it and not
// yet accepted are closed, so their writers fail instead of blocking (a
// net.Pipe has no kernel buffer to absorb them).
func (t *Transport) Shutdown() error {
	t.once.Do(func() { close(t.done) })
	t.drain()
	return nil
}

func (t *Transport) drain() {
	for {
		select {
		case c := <-t.streamCh:
			c.Close()
		default:
			return
		}
	}
}

// countConn counts the bytes of one end of a stream.
type countConn struct {
	net.Conn
	sent, recv *atomic.Uint64
	both       *atomic.Uint64 // the transport's stream total
}

func (c *countConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.recv.Add(uint64(n))
	c.both.Add(uint64(n))
	return n, err
}

func (c *countConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.sent.Add(uint64(n))
	c.both.Add(uint64(n))
	return n, err
}

type addr string

func (a addr) Network() string { return "mem" }
func (a addr) String() string  { return string(a) }
