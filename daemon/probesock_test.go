package daemon

import (
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pollerWatches reports whether any epoll instance of this process
// watches fd (the "tfd:" lines of an eventpoll's fdinfo).
func pollerWatches(t *testing.T, fd int) bool {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || target != "anon_inode:[eventpoll]" {
			continue
		}
		info, err := os.ReadFile("/proc/self/fdinfo/" + e.Name())
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(info), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "tfd:" && f[1] == strconv.Itoa(fd) {
				return true
			}
		}
	}
	return false
}

// TestProbeSocketOutsidePoller: the probe socket is not watched by the
// runtime's epoll (a datagram arriving wakes nobody; the prober reads at
// its rounds), while a socket of package net is (the check sees it).
func TestProbeSocketOutsidePoller(t *testing.T) {
	p, err := newProber(1, "127.0.0.1", 0, probeEvery)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var netFD int
	if err := raw.Control(func(fd uintptr) { netFD = int(fd) }); err != nil {
		t.Fatal(err)
	}
	if !pollerWatches(t, netFD) {
		t.Fatalf("package net's socket (fd %d) not found in any epoll: the check cannot see", netFD)
	}
	p.conn.mu.RLock()
	fd := p.conn.fd
	p.conn.mu.RUnlock()
	if pollerWatches(t, fd) {
		t.Errorf("the probe socket (fd %d) is watched by an epoll: every datagram wakes the process", fd)
	}
}

// TestProbeSocketDualStack: a wildcard probe socket takes IPv4 and IPv6
// datagrams in one recvmmsg, with unmapped sources and exact lengths, and
// sends to both families; a closed socket says so.
func TestProbeSocketDualStack(t *testing.T) {
	s, err := listenProbe("", 0)
	if err != nil {
		t.Fatal(err)
	}
	port := s.LocalAddr().Port()
	v4, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer v4.Close()
	v6, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer v6.Close()
	senders := map[netip.AddrPort]*net.UDPConn{v4.LocalAddr().(*net.UDPAddr).AddrPort(): v4, v6.LocalAddr().(*net.UDPAddr).AddrPort(): v6}
	for from, c := range senders {
		to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
		if from.Addr().Is6() {
			to = netip.AddrPortFrom(netip.IPv6Loopback(), port)
		}
		if _, err := c.WriteToUDPAddrPort([]byte("from "+from.String()), to); err != nil {
			t.Fatal(err)
		}
	}
	ms := make([]sockMsg, 4)
	for i := range ms {
		ms[i].Buf = make([]byte, 100)
	}
	b := newBatch(len(ms))
	got := map[netip.AddrPort]string{}
	for deadline := time.Now().Add(10 * time.Second); len(got) < 2; time.Sleep(5 * time.Millisecond) {
		n, err := s.recv(b, ms)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms[:n] {
			got[m.Addr] = string(m.Buf[:m.N])
		}
		if time.Now().After(deadline) {
			t.Fatalf("received %v; want one datagram from each of %v", got, senders)
		}
	}
	for from := range senders {
		if got[from] != "from "+from.String() {
			t.Errorf("from %v: %q; want %q (all: %v)", from, got[from], "from "+from.String(), got)
		}
	}
	// Replies to both families in one sendmmsg.
	out := []sockMsg{}
	for from := range senders {
		out = append(out, sockMsg{Buf: []byte("to " + from.String()), Addr: from})
	}
	if n, err := s.send(newBatch(len(out)), out); n != len(out) || err != nil {
		t.Fatalf("send = %d, %v; want %d, nil", n, err, len(out))
	}
	for from, c := range senders {
		buf := make([]byte, 100)
		if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
			t.Fatal(err)
		}
		n, src, err := c.ReadFromUDPAddrPort(buf)
		if err != nil || string(buf[:n]) != "to "+from.String() || src.Port() != port {
			t.Errorf("%v got %q from %v, %v; want %q from port %d", from, buf[:n], src, err, "to "+from.String(), port)
		}
	}
	// Nothing waiting: no datagram, no error.
	if n, err := s.recv(b, ms); n != 0 || err != nil {
		t.Errorf("recv with nothing waiting = %d, %v; want 0, nil", n, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.recv(b, ms); err != errSockClosed {
		t.Errorf("recv after Close: %v; want %v", err, errSockClosed)
	}
	if err := s.WriteTo([]byte("x"), netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)); err != errSockClosed {
		t.Errorf("WriteTo after Close: %v; want %v", err, errSockClosed)
	}
}

// LocalAddr is the bound address and port (tests: production binds a
// known port).
func (s *probeSock) LocalAddr() netip.AddrPort {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.fd < 0 {
		return netip.AddrPort{}
	}
	sa, err := unix.Getsockname(s.fd)
	if err != nil {
		return netip.AddrPort{}
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
	}
	return netip.AddrPort{}
}

// WriteTo sends one datagram to to (tests: production sends in batches).
func (s *probeSock) WriteTo(p []byte, to netip.AddrPort) error {
	b := newBatch(1)
	if _, err := s.send(b, []sockMsg{{Buf: p, Addr: to}}); err != nil {
		return err
	}
	return nil
}
