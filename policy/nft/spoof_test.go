package nft_test

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/internal/testutil"
)

// TestDatapathSpoofing (root): x/b admits only namespace y. x/a adds y/a's
// address to its eth0 and sends UDP from it to x/b. Without the
// anti-spoofing rule the forged datagrams reach x/b (the policy judges the
// address, so it is bypassed); with it they are dropped, while y/a's own
// datagrams still arrive and x/a's from its own address are still denied.
func TestDatapathSpoofing(t *testing.T) {
	b := newDPBed(t)
	a := b.applier(t)
	xa, xb, ya := b.pods[0], b.pods[1], b.pods[3]
	if xa.Name != "a" || xb.Name != "b" || ya.Namespace != "y" || ya.Name != "a" {
		t.Fatalf("bed pods %v", b.pods)
	}
	m := b.model(t, []*networkingv1.NetworkPolicy{np("x", "b", map[string]string{"pod": "b"}, nil,
		[]networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
			{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"ns": "y"}}}}}}, nil)})

	// x/a also holds y/a's address.
	h := handleAt(t, b.nsOf["x/a"])
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.AddrAdd(eth0, prefix(ya.IP, 32)); err != nil {
		t.Fatal(err)
	}

	// x/b counts datagrams on port 90 by source address.
	var mu sync.Mutex
	got := map[netip.Addr]int{}
	var l net.PacketConn
	if err := testutil.InNetNS(b.nsOf["x/b"], func() (err error) {
		l, err = net.ListenPacket("udp4", ":90")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		buf := make([]byte, 64)
		for {
			_, from, err := l.ReadFrom(buf)
			if err != nil {
				return
			}
			mu.Lock()
			got[from.(*net.UDPAddr).AddrPort().Addr().Unmap()]++
			mu.Unlock()
		}
	}()
	// send sends a datagram every 50 ms for 1.5 s from the namespace at
	// path, from src, to x/b:90, and reports how many x/b received. (The
	// first wait for the node's proxy ARP answer, which the kernel holds
	// back up to proxy_delay, 0.8 s; a denied datagram has no event to
	// poll for, so every send lasts the same.)
	send := func(path string, src netip.Addr) int {
		t.Helper()
		mu.Lock()
		delete(got, src)
		mu.Unlock()
		err := testutil.InNetNS(path, func() error {
			c, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), net.UDPAddrFromAddrPort(netip.AddrPortFrom(xb.IP, 90)))
			if err != nil {
				return err
			}
			defer c.Close()
			for range 30 {
				if _, err := c.Write([]byte("hello")); err != nil {
					return err
				}
				time.Sleep(50 * time.Millisecond)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("send from %v: %v", src, err)
		}
		time.Sleep(100 * time.Millisecond) // the last one's way
		mu.Lock()
		defer mu.Unlock()
		return got[src]
	}

	for _, tt := range []struct {
		name        string
		prefix      string
		forgedWants bool
	}{
		{"without the anti-spoofing rule", "", true},
		{"with it", "wp", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := bedConfig()
			cfg.PodIfPrefix = tt.prefix
			prog, err := cfg.Compile(m, "n1")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := a.Apply(prog); err != nil {
				t.Fatal(err)
			}
			n := send(b.nsOf["x/a"], ya.IP)
			t.Logf("x/a as y/a → x/b: %d of 30 forged datagrams arrived", n)
			if (n > 0) != tt.forgedWants {
				t.Errorf("x/a as y/a → x/b: %d of 30 arrived; want arrived=%v", n, tt.forgedWants)
			}
			if n := send(b.nsOf["y/a"], ya.IP); n == 0 {
				t.Errorf("y/a → x/b: none of 30 arrived; want allowed")
			}
			if n := send(b.nsOf["x/a"], xa.IP); n != 0 {
				t.Errorf("x/a → x/b: %d of 30 arrived; want denied", n)
			}
		})
	}
}
