package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"syscall"
	"time"

	miekg "github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// Each listen address gets one TCP listener and several UDP sockets bound
// with SO_REUSEPORT, so the kernel spreads queries over one reader
// goroutine per socket. Every socket is served by a miekg Server; the UDP
// ones read through udpReader, which answers zone queries itself (the fast
// path) and hands miekg only what it declines. Only the given addresses
// are bound, never a wildcard unless asked: the server is not an open
// resolver for every network the host is on.

// listener is everything served for one listen address.
type listener struct {
	spec    string
	addr    netip.AddrPort // bound address (the port resolved when 0 was asked)
	servers []*miekg.Server
	done    []chan struct{} // closed when the matching server's serve loop returned
}

func reusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

// open binds spec (UDP sockets, then TCP on the same port) and starts
// serving. With port 0 a free port is picked, retried if TCP finds it taken.
func (s *Server) open(spec string) (*listener, error) {
	ap, err := parseHostPort(spec, 53)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", spec, err)
	}
	for attempt := 0; ; attempt++ {
		l, err := s.bind(spec, ap)
		if err == nil {
			s.serve(l)
			return l, nil
		}
		if ap.Port() != 0 || attempt == 4 {
			return nil, err
		}
	}
}

func (s *Server) bind(spec string, ap netip.AddrPort) (*listener, error) {
	lc := net.ListenConfig{Control: reusePort}
	n := s.cfg.UDPSockets
	if n == 0 {
		n = max(2, runtime.GOMAXPROCS(0))
	}
	l := &listener{spec: spec, addr: ap}
	var conns []net.PacketConn
	fail := func(err error) (*listener, error) {
		for _, c := range conns {
			c.Close()
		}
		return nil, err
	}
	for i := 0; i < n; i++ {
		pc, err := lc.ListenPacket(context.Background(), "udp", l.addr.String())
		if err != nil {
			return fail(fmt.Errorf("listen udp %s: %w", l.addr, err))
		}
		conns = append(conns, pc)
		if l.addr.Port() == 0 {
			l.addr = netip.AddrPortFrom(l.addr.Addr(), pc.LocalAddr().(*net.UDPAddr).AddrPort().Port())
		}
	}
	tl, err := net.Listen("tcp", l.addr.String())
	if err != nil {
		return fail(fmt.Errorf("listen tcp %s: %w", l.addr, err))
	}
	invalid := func([]byte, error) { s.stats.errors.Add(1) }
	for _, pc := range conns {
		l.servers = append(l.servers, &miekg.Server{
			PacketConn:     &udpConn{pc.(*net.UDPConn)},
			Handler:        s,
			DecorateReader: s.decorateReader,
			MsgInvalidFunc: invalid,
		})
	}
	l.servers = append(l.servers, &miekg.Server{Listener: tl, Handler: s, ReadTimeout: 5 * time.Second, MsgInvalidFunc: invalid})
	return l, nil
}

// serve starts the servers of l and returns once each has started.
func (s *Server) serve(l *listener) {
	for _, srv := range l.servers {
		started, done := make(chan struct{}), make(chan struct{})
		l.done = append(l.done, done)
		srv.NotifyStartedFunc = func() { close(started) }
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer close(done)
			if err := srv.ActivateAndServe(); err != nil {
				s.log.Error("dns serve stopped", "listen", l.addr, "err", err)
			}
		}()
		select {
		case <-started:
		case <-done:
		}
	}
	s.log.Info("listening", "addr", l.addr, "udp_sockets", len(l.servers)-1)
}

// close shuts l's servers down and waits for their serve loops.
func (l *listener) close() {
	for i, srv := range l.servers {
		select {
		case <-l.done[i]:
			continue // already stopped
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := srv.ShutdownContext(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			// Not started: close the sockets so nothing stays bound.
			if srv.PacketConn != nil {
				srv.PacketConn.Close()
			}
			if srv.Listener != nil {
				srv.Listener.Close()
			}
		}
		cancel()
		<-l.done[i]
	}
}
