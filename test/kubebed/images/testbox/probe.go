package main

// probe: one connection attempt per target, all targets at once, the way
// the upstream netpol suite's agnhost connect judges one cell of its
// matrix. A TCP target is reached when the handshake completes; a UDP
// target when a datagram sent to it is answered (serve -udp answers every
// datagram). A denied probe waits out -t, so probing a whole row of the
// matrix in one process costs one timeout, not one per cell.
//
// With -until, each target is probed again (a fresh socket, so a fresh
// conntrack entry, every attempt) until its result is -want or -until has
// passed; the line then also gives how long that took. This measures how
// fast a change takes effect.

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"
)

// target is one probe: proto is "tcp" or "udp".
type target struct {
	proto string
	addr  netip.AddrPort
}

func (t target) String() string { return t.proto + "://" + t.addr.String() }

// parseTarget reads tcp://IP:PORT or udp://IP:PORT.
func parseTarget(s string) (target, error) {
	proto, rest, ok := strings.Cut(s, "://")
	if !ok || (proto != "tcp" && proto != "udp") {
		return target{}, fmt.Errorf("target %q: want tcp://IP:PORT or udp://IP:PORT", s)
	}
	ap, err := netip.ParseAddrPort(rest)
	if err != nil || ap.Port() == 0 {
		return target{}, fmt.Errorf("target %q: want tcp://IP:PORT or udp://IP:PORT with a port above 0", s)
	}
	return target{proto, ap}, nil
}

func probe(args []string) error {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	timeout := fs.Duration("t", time.Second, "timeout of one attempt")
	until := fs.Duration("until", 0, "probe again until the result is -want or this much time has passed (0: once)")
	want := fs.String("want", "ok", "with -until: the result to wait for, ok or fail")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("usage: testbox probe [-t 1s] [-until 0 -want ok|fail] tcp://IP:PORT|udp://IP:PORT...")
	}
	if *want != "ok" && *want != "fail" {
		return fmt.Errorf("-want %q: want ok or fail", *want)
	}
	var targets []target
	for _, a := range fs.Args() {
		t, err := parseTarget(a)
		if err != nil {
			return err
		}
		targets = append(targets, t)
	}
	lines := make([]string, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Go(func() {
			start := time.Now()
			for {
				err := attempt(t, *timeout)
				ok := err == nil
				done := *until == 0 || ok == (*want == "ok") || time.Since(start) >= *until
				if !done {
					time.Sleep(20 * time.Millisecond)
					continue
				}
				res := "ok"
				if !ok {
					res = "fail " + strings.ReplaceAll(err.Error(), "\n", " ")
				}
				if *until > 0 {
					lines[i] = fmt.Sprintf("%s after=%s %s", t, time.Since(start).Round(time.Millisecond), res)
				} else {
					lines[i] = fmt.Sprintf("%s %s", t, res)
				}
				return
			}
		})
	}
	wg.Wait()
	for _, l := range lines {
		fmt.Println(l)
	}
	return nil
}

// attempt makes one connection (TCP) or one exchange (UDP) with t.
func attempt(t target, timeout time.Duration) error {
	c, err := net.DialTimeout(t.proto, t.addr.String(), timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	if t.proto == "tcp" {
		return nil
	}
	// UDP: send until an answer comes or the timeout passes (a datagram
	// may be lost; each retry uses the same socket and so the same flow).
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 512)
	for time.Now().Before(deadline) {
		if _, err := c.Write([]byte("probe")); err != nil {
			return err
		}
		next := time.Now().Add(250 * time.Millisecond)
		if next.After(deadline) {
			next = deadline
		}
		_ = c.SetReadDeadline(next)
		n, err := c.Read(buf)
		if err == nil && n > 0 {
			return nil
		}
		var ne net.Error
		if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
			return err // e.g. connection refused: an ICMP port unreachable
		}
	}
	return fmt.Errorf("udp %s: no answer within %v", t.addr, timeout)
}

// serveUDP answers every datagram on addr with "host=H from=IP:PORT".
func serveUDP(addr, host string) error {
	c, err := net.ListenPacket("udp", addr)
	if err != nil {
		return err
	}
	go func() {
		<-stopSignal()
		c.Close()
	}()
	buf := make([]byte, 2048)
	for {
		_, from, err := c.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			fmt.Fprintln(os.Stderr, "testbox: udp:", err)
			continue
		}
		_, _ = c.WriteTo(fmt.Appendf(nil, "host=%s from=%s\n", host, from), from)
	}
}
