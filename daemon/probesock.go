package daemon

// The probe's UDP socket, kept out of Go's network poller.
//
// The prober reads its socket once a round (drain, MSG_DONTWAIT), never
// blocking on it. A socket opened through package net is registered with
// the runtime's epoll all the same, and every datagram that arrives makes
// epoll_wait return in whichever thread sleeps in it: the N−1 hellos a
// second woke an idle peer N−1 times a second though nobody was reading
// (strace of one idle peer of 40: 47 of its ~70 epoll events a second
// were the probe socket's). This socket is a plain non-blocking file
// descriptor that no poller watches: a datagram wakes nobody, and drain
// and send use recvmmsg and sendmmsg on it directly.

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// probeSock is a non-blocking UDP socket outside the network poller.
type probeSock struct {
	mu sync.RWMutex // read-held by each call, so Close never closes an fd in use
	fd int          // -1 once closed
}

var errSockClosed = errors.New("probe socket closed")

// listenProbe binds host:port: host "", 0.0.0.0 or :: binds every address,
// IPv4 and IPv6 (a dual-stack socket; IPv4 only where the kernel has no
// IPv6), otherwise that address.
func listenProbe(host string, port uint16) (*probeSock, error) {
	var bind netip.Addr
	if a, err := netip.ParseAddr(host); err == nil && !a.IsUnspecified() {
		bind = a.Unmap()
	}
	family := unix.AF_INET6
	if bind.Is4() {
		family = unix.AF_INET
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil && family == unix.AF_INET6 && !bind.IsValid() {
		family = unix.AF_INET // no IPv6 in this kernel
		fd, err = unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	}
	if err != nil {
		return nil, fmt.Errorf("probe socket: %w", err)
	}
	var sa unix.Sockaddr
	switch {
	case family == unix.AF_INET:
		s := &unix.SockaddrInet4{Port: int(port)}
		if bind.IsValid() {
			s.Addr = bind.As4()
		}
		sa = s
	default:
		if !bind.IsValid() {
			// Both families on the wildcard, as package net's "udp" does.
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
				unix.Close(fd)
				return nil, fmt.Errorf("probe socket: dual stack: %w", err)
			}
		}
		s := &unix.SockaddrInet6{Port: int(port)}
		if bind.IsValid() {
			s.Addr = bind.As16()
		}
		sa = s
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind: %w", err)
	}
	return &probeSock{fd: fd}, nil
}

// setBuffers asks for receive and send buffers of n bytes each: forced
// past net.core.rmem_max and wmem_max where this process may
// (CAP_NET_ADMIN), else what those allow.
func (s *probeSock) setBuffers(n int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.fd < 0 {
		return
	}
	if unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n) != nil {
		_ = unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, n)
	}
	if unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, n) != nil {
		_ = unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_SNDBUF, n)
	}
}

// waitWritable waits up to d for room in the send buffer.
func (s *probeSock) waitWritable(d time.Duration) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.fd < 0 {
		return
	}
	_, _ = unix.Poll([]unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLOUT}}, int(d.Milliseconds()))
}

// Close closes the socket; later calls fail with errSockClosed.
func (s *probeSock) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fd < 0 {
		return nil
	}
	err := unix.Close(s.fd)
	s.fd = -1
	return err
}

// sockMsg is one datagram of a batch: its payload (the buffer to fill when
// receiving, with N set to the length received) and its peer (the
// destination, or the source received).
type sockMsg struct {
	Buf  []byte
	Addr netip.AddrPort
	N    int
}

// mmsghdr is the kernel's struct mmsghdr: Go pads it as C does on every
// architecture (to the alignment of msghdr's pointers).
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
}

// batch is the kernel-side form of up to cap sockMsgs, reused across calls.
type batch struct {
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6 // large enough for either family
}

func newBatch(n int) *batch {
	return &batch{hdrs: make([]mmsghdr, n), iovs: make([]unix.Iovec, n), names: make([]unix.RawSockaddrInet6, n)}
}

// prepare points header i at buf and at name i, of namelen bytes.
func (b *batch) prepare(i int, buf []byte, namelen uint32) {
	b.iovs[i].Base = unsafe.SliceData(buf)
	b.iovs[i].SetLen(len(buf))
	b.hdrs[i] = mmsghdr{}
	h := &b.hdrs[i].hdr
	h.Name = (*byte)(unsafe.Pointer(&b.names[i]))
	h.Namelen = namelen
	h.Iov = &b.iovs[i]
	h.SetIovlen(1)
}

// recv takes up to len(ms) waiting datagrams in one recvmmsg, without
// waiting for any: 0 and nil when none is waiting. Sources are unmapped
// (an IPv4 peer of a dual-stack socket is IPv4).
func (s *probeSock) recv(b *batch, ms []sockMsg) (int, error) {
	n := min(len(ms), len(b.hdrs))
	if n == 0 {
		return 0, nil
	}
	for i := range n {
		b.names[i] = unix.RawSockaddrInet6{}
		b.prepare(i, ms[i].Buf, unix.SizeofSockaddrInet6)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.fd < 0 {
		return 0, errSockClosed
	}
	got, err := mmsg(unix.SYS_RECVMMSG, s.fd, b.hdrs[:n], unix.MSG_DONTWAIT)
	if err == unix.EAGAIN {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	for i := range got {
		ms[i].N = int(b.hdrs[i].len)
		ms[i].Addr = sockaddrPort(&b.names[i])
	}
	return got, nil
}

// send writes ms in one sendmmsg, not waiting for room: the number sent,
// and the error of the first one not sent (the kernel stops there).
func (s *probeSock) send(b *batch, ms []sockMsg) (int, error) {
	n := min(len(ms), len(b.hdrs))
	if n == 0 {
		return 0, nil
	}
	for i := range n {
		b.prepare(i, ms[i].Buf, putSockaddr(&b.names[i], ms[i].Addr))
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.fd < 0 {
		return 0, errSockClosed
	}
	return mmsg(unix.SYS_SENDMMSG, s.fd, b.hdrs[:n], unix.MSG_DONTWAIT)
}

// mmsg runs recvmmsg or sendmmsg on hdrs, retrying on EINTR.
func mmsg(trap uintptr, fd int, hdrs []mmsghdr, flags int) (int, error) {
	for {
		r, _, errno := unix.Syscall6(trap, uintptr(fd), uintptr(unsafe.Pointer(&hdrs[0])), uintptr(len(hdrs)), uintptr(flags), 0, 0)
		switch errno {
		case 0:
			return int(r), nil
		case unix.EINTR:
			continue
		}
		return 0, errno
	}
}

// putSockaddr writes to as a sockaddr into rsa and returns its length: an
// IPv4 address (or an IPv4-mapped one) as AF_INET, which Linux takes on a
// dual-stack socket too, anything else as AF_INET6.
func putSockaddr(rsa *unix.RawSockaddrInet6, to netip.AddrPort) uint32 {
	a := to.Addr().Unmap()
	port := to.Port()
	if a.Is4() {
		s4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(rsa))
		*s4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.As4()}
		p := (*[2]byte)(unsafe.Pointer(&s4.Port))
		p[0], p[1] = byte(port>>8), byte(port)
		return unix.SizeofSockaddrInet4
	}
	*rsa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: a.As16()}
	p := (*[2]byte)(unsafe.Pointer(&rsa.Port))
	p[0], p[1] = byte(port>>8), byte(port)
	return unix.SizeofSockaddrInet6
}

// sockaddrPort reads the sockaddr the kernel wrote into rsa; the zero
// AddrPort for another family.
func sockaddrPort(rsa *unix.RawSockaddrInet6) netip.AddrPort {
	switch rsa.Family {
	case unix.AF_INET:
		s4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(rsa))
		p := (*[2]byte)(unsafe.Pointer(&s4.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(s4.Addr), uint16(p[0])<<8|uint16(p[1]))
	case unix.AF_INET6:
		p := (*[2]byte)(unsafe.Pointer(&rsa.Port))
		return netip.AddrPortFrom(netip.AddrFrom16(rsa.Addr).Unmap(), uint16(p[0])<<8|uint16(p[1]))
	}
	return netip.AddrPort{}
}
