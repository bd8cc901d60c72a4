package gossip

// The mesh's memberlist transport: UDP for packets, TCP for streams, on
// one address and port, as memberlist's own NetTransport, with two costs
// of that one removed. NetTransport allocates a fresh 64 KiB buffer for
// every packet it reads (memberlist keeps the packet's slice, so it cannot
// reuse one): at a few packets a second that was most of an idle peer's
// allocation (~600 KB/s at 40 peers) and, in a mass join, a large-object
// allocation and a 64 KiB clear per packet, with the garbage collections
// they bring. Here one buffer is read into and the packet copied out at
// its size. And NetTransport resolves the destination string of every
// packet it sends; here it is parsed as an address (memberlist's are
// always ip:port).

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	sockaddr "github.com/hashicorp/go-sockaddr"
	"github.com/hashicorp/memberlist"
)

const (
	// maxPacket is the largest UDP payload there is.
	maxPacket = 65536
	// udpReadBuffer is the socket's receive buffer asked for (halved
	// until the kernel takes it), as memberlist's: room for a burst.
	udpReadBuffer = 2 << 20
)

// netTransport is a memberlist.NodeAwareTransport on real sockets.
type netTransport struct {
	log      *slog.Logger
	bind     netip.Addr
	tcp      *net.TCPListener
	udp      *net.UDPConn
	packets  chan *memberlist.Packet
	streams  chan net.Conn
	closed   atomic.Bool
	wg       sync.WaitGroup
	shutdown sync.Once
}

var _ memberlist.NodeAwareTransport = (*netTransport)(nil)

// newNetTransport listens on bind:port, TCP and UDP; port 0 takes one the
// kernel picks for TCP that UDP can have too (tries a few).
func newNetTransport(bind string, port int, log *slog.Logger) (*netTransport, error) {
	a, err := netip.ParseAddr(bind)
	if err != nil {
		return nil, fmt.Errorf("gossip bind address %q: %w", bind, err)
	}
	tries := 1
	if port == 0 {
		tries = 10
	}
	for i := 0; ; i++ {
		t, err := listenTransport(a, port, log)
		if err == nil || i+1 >= tries || !errors.Is(err, syscall.EADDRINUSE) {
			return t, err
		}
	}
}

func listenTransport(bind netip.Addr, port int, log *slog.Logger) (*netTransport, error) {
	tcp, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(bind, uint16(port))))
	if err != nil {
		return nil, fmt.Errorf("gossip TCP listener on %s port %d: %w", bind, port, err)
	}
	port = tcp.Addr().(*net.TCPAddr).Port
	udp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(bind, uint16(port))))
	if err != nil {
		_ = tcp.Close()
		return nil, fmt.Errorf("gossip UDP listener on %s port %d: %w", bind, port, err)
	}
	for size := udpReadBuffer; size > 0; size /= 2 {
		if udp.SetReadBuffer(size) == nil {
			break
		}
	}
	t := &netTransport{
		log: log, bind: bind, tcp: tcp, udp: udp,
		packets: make(chan *memberlist.Packet), streams: make(chan net.Conn),
	}
	t.wg.Add(2)
	go t.readPackets()
	go t.acceptStreams()
	return t, nil
}

// Port is the port listened on.
func (t *netTransport) Port() int { return t.tcp.Addr().(*net.TCPAddr).Port }

// FinalAdvertiseAddr is ip:port when ip is given; else the bound address,
// or for a wildcard bind the host's private address (as memberlist's).
func (t *netTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	if ip != "" {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			return nil, 0, fmt.Errorf("advertise address %q: %w", ip, err)
		}
		return net.IP(a.Unmap().AsSlice()), port, nil
	}
	if !t.bind.IsUnspecified() {
		return net.IP(t.bind.Unmap().AsSlice()), t.Port(), nil
	}
	s, err := sockaddr.GetPrivateIP()
	if err != nil {
		return nil, 0, fmt.Errorf("find an address to advertise: %w", err)
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return nil, 0, fmt.Errorf("no private address to advertise (got %q); give one", s)
	}
	return net.IP(a.Unmap().AsSlice()), t.Port(), nil
}

// WriteTo sends b to addr ("ip:port").
func (t *netTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

// WriteToAddress sends b to a.Addr, "ip:port" (memberlist resolves names
// before it sends: its addresses are always ip:port).
func (t *netTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	to, err := netip.ParseAddrPort(a.Addr)
	if err != nil {
		return time.Time{}, fmt.Errorf("gossip packet destination: %w", err)
	}
	_, err = t.udp.WriteToUDPAddrPort(b, to)
	return time.Now(), err
}

// PacketCh delivers the packets received.
func (t *netTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }

// DialTimeout opens a stream to addr.
func (t *netTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

// DialAddressTimeout opens a stream to a.Addr.
func (t *netTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	return d.Dial("tcp", a.Addr)
}

// StreamCh delivers the streams accepted.
func (t *netTransport) StreamCh() <-chan net.Conn { return t.streams }

// Shutdown closes the sockets and waits for the readers (memberlist goes
// on reading the channels until it returns).
func (t *netTransport) Shutdown() error {
	t.shutdown.Do(func() {
		t.closed.Store(true)
		_ = t.tcp.Close()
		_ = t.udp.Close()
	})
	t.wg.Wait()
	return nil
}

// readPackets reads into one buffer and hands memberlist a copy of each
// packet at its size.
func (t *netTransport) readPackets() {
	defer t.wg.Done()
	buf := make([]byte, maxPacket)
	for {
		n, from, err := t.udp.ReadFromUDPAddrPort(buf)
		now := time.Now()
		if err != nil {
			if t.closed.Load() {
				return
			}
			t.log.Warn("gossip UDP read", "err", err)
			time.Sleep(10 * time.Millisecond) // not a busy loop on a lasting error
			continue
		}
		if n == 0 {
			continue
		}
		p := &memberlist.Packet{
			Buf:       append([]byte(nil), buf[:n]...),
			From:      net.UDPAddrFromAddrPort(netip.AddrPortFrom(from.Addr().Unmap(), from.Port())),
			Timestamp: now,
		}
		t.packets <- p
	}
}

// acceptStreams hands memberlist every connection accepted, backing off
// on errors as memberlist's does.
func (t *netTransport) acceptStreams() {
	defer t.wg.Done()
	var delay time.Duration
	for {
		c, err := t.tcp.AcceptTCP()
		if err != nil {
			if t.closed.Load() {
				return
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			t.log.Warn("gossip TCP accept", "err", err)
			time.Sleep(delay)
			continue
		}
		delay = 0
		t.streams <- c
	}
}
