// Package gossiptest provides an in-memory network for memberlist, so that
// gossip, ipam and dns tests run many peers in one process without sockets.
//
// Unlike memberlist's MockNetwork it is safe to grow while nodes gossip,
// never blocks a sender (a full or closed receiver drops the packet, as UDP
// would), fails dials to shut-down or partitioned peers at once, and can cut
// and heal links between groups of peers.
//
//	var n gossiptest.Network
//	tr := n.NewTransport("p1")      // memberlist.Config.Transport = tr
//	n.Partition([]string{"p1"}, []string{"p2", "p3"})
//	n.Heal()
package gossiptest

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// ErrUnreachable is returned by dials to a peer that is gone or cut off.
var ErrUnreachable = errors.New("gossiptest: peer unreachable")

// Network is a set of in-memory transports. The zero value is ready.
type Network struct {
	mu     sync.Mutex // guards following
	byAddr map[string]*Transport
	byName map[string]*Transport
	next   int
	cut    map[[2]string]bool // name pairs that cannot talk
}

// NewTransport returns a transport with a unique address 127.0.0.1:N.
func (n *Network) NewTransport(name string) *Transport {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.byAddr == nil {
		n.byAddr, n.byName, n.cut = map[string]*Transport{}, map[string]*Transport{}, map[[2]string]bool{}
	}
	n.next++
	t := &Transport{
		net:      n,
		name:     name,
		addr:     "127.0.0.1:" + strconv.Itoa(n.next),
		packetCh: make(chan *memberlist.Packet, 1024),
		streamCh: make(chan net.Conn, 64),
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

// Heal restores every link.
func (n *Network) Heal() {
	n.mu.Lock()
	n.cut = map[[2]string]bool{}
	n.mu.Unlock()
}

func (n *Network) route(from *Transport, a memberlist.Address) (*Transport, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	dest := n.byAddr[a.Addr]
	if a.Name != "" {
		if d := n.byName[a.Name]; d != nil {
			dest = d
		}
	}
	if dest == nil || dest.closed() || n.cut[[2]string{from.name, dest.name}] {
		return nil, fmt.Errorf("%w: %s", ErrUnreachable, a)
	}
	return dest, nil
}

// Transport is one peer's memberlist transport on a Network.
type Transport struct {
	net      *Network
	name     string
	addr     string
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	once     sync.Once
	done     chan struct{}
}

var _ memberlist.NodeAwareTransport = (*Transport)(nil)

// Addr returns the transport's address, to join it.
func (t *Transport) Addr() string { return t.addr }

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
	host, port, _ := net.SplitHostPort(t.addr)
	p, _ := strconv.Atoi(port)
	return net.ParseIP(host), p, nil
}

// WriteTo implements memberlist.Transport.
func (t *Transport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

// WriteToAddress delivers a packet, or drops it like UDP would.
func (t *Transport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	now := time.Now()
	dest, err := t.net.route(t, a)
	if err != nil {
		return now, nil // a lost datagram is not an error
	}
	p := &memberlist.Packet{Buf: append([]byte(nil), b...), From: addr(t.addr), Timestamp: now}
	select {
	case dest.packetCh <- p:
	case <-dest.done:
	default:
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
	dest, err := t.net.route(t, a)
	if err != nil {
		return nil, err
	}
	local, remote := net.Pipe()
	select {
	case dest.streamCh <- remote:
		if dest.closed() {
			dest.drain() // nobody will accept it: fail the dialer's writes
		}
		return local, nil
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

type addr string

func (a addr) Network() string { return "mem" }
func (a addr) String() string  { return string(a) }
