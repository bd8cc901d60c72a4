package sim

// The simulated network: one memberlist transport per peer, each with an
// address of its own (10.200.x.y:6783, so the router sees distinct
// underlay endpoints). Datagrams are delivered after the configured
// latency unless lost (Loss) or cut (a partition, a killed peer) — a full
// or closed receiver drops them, as UDP would. Streams are in-memory pipes
// that fail at once when the far side is unreachable. Every byte a peer
// sends or receives is counted.

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

// ErrUnreachable is returned by dials to a peer that is killed or cut off.
var ErrUnreachable = errors.New("sim: peer unreachable")

// Network is a set of transports. Use NewNetwork.
type Network struct {
	latency time.Duration
	loss    float64

	mu     sync.RWMutex // guards following
	byAddr map[string]*Transport
	group  map[string]int // address -> partition group; absent = 0
}

// NewNetwork returns a network delivering datagrams after latency and
// losing each with probability loss.
func NewNetwork(latency time.Duration, loss float64) *Network {
	return &Network{latency: latency, loss: loss, byAddr: map[string]*Transport{}, group: map[string]int{}}
}

// AddrOf returns the underlay address of the i-th peer.
func AddrOf(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 200, byte(i >> 8), byte(i)})
}

// NewTransport returns the transport of the peer at addr (AddrOf).
func (n *Network) NewTransport(addr netip.Addr) *Transport {
	t := &Transport{
		net:      n,
		addr:     net.JoinHostPort(addr.String(), "6783"),
		ip:       addr,
		packetCh: make(chan *memberlist.Packet, 4096),
		streamCh: make(chan net.Conn, 256),
		done:     make(chan struct{}),
	}
	n.mu.Lock()
	n.byAddr[t.addr] = t
	n.mu.Unlock()
	return t
}

// SetGroup puts the peer at addr in partition group g: peers of different
// groups cannot reach each other. Heal puts everyone back in group 0.
func (n *Network) SetGroup(addr netip.Addr, g int) {
	n.mu.Lock()
	n.group[net.JoinHostPort(addr.String(), "6783")] = g
	n.mu.Unlock()
}

// Heal removes every partition.
func (n *Network) Heal() {
	n.mu.Lock()
	n.group = map[string]int{}
	n.mu.Unlock()
}

func (n *Network) route(from *Transport, to string) (*Transport, error) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	dest := n.byAddr[to]
	if dest == nil || dest.closed() || from.closed() || n.group[from.addr] != n.group[to] {
		return nil, fmt.Errorf("%w: %s", ErrUnreachable, to)
	}
	return dest, nil
}

// Transport is one peer's memberlist transport.
type Transport struct {
	net      *Network
	addr     string
	ip       netip.Addr
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	once     sync.Once
	done     chan struct{}
	sent     atomic.Uint64 // bytes sent: datagrams and stream writes
	recv     atomic.Uint64 // bytes received: datagrams and stream reads
}

var _ memberlist.NodeAwareTransport = (*Transport)(nil)

// Bytes returns the bytes sent and received so far.
func (t *Transport) Bytes() (sent, recv uint64) { return t.sent.Load(), t.recv.Load() }

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
	return net.IP(t.ip.AsSlice()), 6783, nil
}

// WriteTo implements memberlist.Transport.
func (t *Transport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

// WriteToAddress delivers a datagram after the latency, or drops it.
func (t *Transport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	now := time.Now()
	t.sent.Add(uint64(len(b)))
	dest, err := t.net.route(t, a.Addr)
	if err != nil || (t.net.loss > 0 && rand.Float64() < t.net.loss) {
		return now, nil // a lost datagram is not an error
	}
	p := &memberlist.Packet{Buf: append([]byte(nil), b...), From: simAddr(t.addr), Timestamp: now}
	deliver := func() {
		select {
		case dest.packetCh <- p:
			dest.recv.Add(uint64(len(p.Buf)))
		case <-dest.done:
		default:
		}
	}
	if t.net.latency > 0 {
		time.AfterFunc(t.net.latency, deliver)
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
	dest, err := t.net.route(t, a.Addr)
	if err != nil {
		return nil, err
	}
	if t.net.latency > 0 {
		time.Sleep(t.net.latency) // the SYN's round trip, roughly
	}
	local, remote := net.Pipe()
	lc := &countConn{Conn: local, sent: &t.sent, recv: &t.recv}
	rc := &countConn{Conn: remote, sent: &dest.sent, recv: &dest.recv}
	select {
	case dest.streamCh <- rc:
		if dest.closed() {
			dest.drain()
		}
		return lc, nil
	case <-dest.done:
	case <-time.After(timeout):
	}
	local.Close()
	remote.Close()
	return nil, fmt.Errorf("%w: %s", ErrUnreachable, a.Addr)
}

// StreamCh implements memberlist.Transport.
func (t *Transport) StreamCh() <-chan net.Conn { return t.streamCh }

// Shutdown makes the transport unreachable (memberlist calls it; Kill too).
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
}

func (c *countConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.recv.Add(uint64(n))
	return n, err
}

func (c *countConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.sent.Add(uint64(n))
	return n, err
}

type simAddr string

func (a simAddr) Network() string { return "sim" }
func (a simAddr) String() string  { return string(a) }
