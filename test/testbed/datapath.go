package testbed

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
)

// KernelRoute is one route of `ip -j route show` in a host.
type KernelRoute struct {
	Dst      string `json:"dst"`
	Gateway  string `json:"gateway"`
	Dev      string `json:"dev"`
	Protocol string `json:"protocol"`
}

// WeftRoutes returns the host's routes marked with weft's route protocol
// (157), as the kernel lists them.
func (h *Host) WeftRoutes() ([]KernelRoute, error) {
	out, err := h.Run("ip", "-j", "route", "show", "proto", "157")
	if err != nil {
		return nil, fmt.Errorf("ip route show proto 157 on %s: %v: %s", h.Name, err, out)
	}
	var rs []KernelRoute
	if strings.TrimSpace(out) == "" {
		return nil, nil
	}
	if err := json.Unmarshal([]byte(out), &rs); err != nil {
		return nil, fmt.Errorf("decode routes of %s: %v: %s", h.Name, err, out)
	}
	return rs, nil
}

// RouteGet returns the route the host's kernel picks for dst
// (`ip -j route get`).
func (h *Host) RouteGet(dst netip.Addr) (KernelRoute, error) {
	out, err := h.Run("ip", "-j", "route", "get", dst.String())
	if err != nil {
		return KernelRoute{}, fmt.Errorf("ip route get %s on %s: %v: %s", dst, h.Name, err, out)
	}
	var rs []KernelRoute
	if err := json.Unmarshal([]byte(out), &rs); err != nil || len(rs) == 0 {
		return KernelRoute{}, fmt.Errorf("decode route get on %s: %v: %s", h.Name, err, out)
	}
	return rs[0], nil
}

// ListenTCP opens a TCP listener on addr inside namespace ns (a name under
// /var/run/netns). The socket stays in that namespace; Accept may be called
// from any goroutine. The listener is closed by t.Cleanup.
func ListenTCP(t testing.TB, ns, addr string) net.Listener {
	t.Helper()
	type res struct {
		l   net.Listener
		err error
	}
	c := make(chan res, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies in ns with this goroutine
		h, err := netns.GetFromName(ns)
		if err != nil {
			c <- res{err: err}
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			c <- res{err: err}
			return
		}
		l, err := net.Listen("tcp", addr)
		c <- res{l, err}
	}()
	r := <-c
	if r.err != nil {
		t.Fatalf("listen %s in %s: %v", addr, ns, r.err)
	}
	t.Cleanup(func() { r.l.Close() })
	return r.l
}

// ServeReply answers every connection l accepts with reply and closes it,
// until l is closed.
func ServeReply(l net.Listener, reply []byte) {
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write(reply)
			c.Close()
		}
	}()
}
