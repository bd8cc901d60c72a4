package gossip

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// testTransports returns two transports on loopback, each on a port of
// the kernel's choosing (the same for TCP and UDP).
func testTransports(t testing.TB) (a, b *netTransport) {
	t.Helper()
	for _, p := range []**netTransport{&a, &b} {
		tr, err := newNetTransport("127.0.0.1", 0, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tr.Shutdown() })
		if u := tr.udp.LocalAddr().(*net.UDPAddr).Port; u != tr.Port() {
			t.Fatalf("UDP on port %d, TCP on %d", u, tr.Port())
		}
		*p = tr
	}
	return a, b
}

func recvPacket(t testing.TB, tr *netTransport) *memberlist.Packet {
	t.Helper()
	select {
	case p := <-tr.PacketCh():
		return p
	case <-time.After(10 * time.Second):
		t.Fatal("no packet within 10 s")
		return nil
	}
}

// TestTransportPackets: each packet reaches memberlist whole, from the
// sender's address, in a buffer of its own no bigger than it (not the
// 64 KiB NetTransport gives every packet), which later packets do not
// overwrite; a destination that is not ip:port is refused.
func TestTransportPackets(t *testing.T) {
	a, b := testTransports(t)
	to := fmt.Sprintf("127.0.0.1:%d", b.Port())
	first := bytes.Repeat([]byte{1}, 100)
	if _, err := a.WriteTo(first, to); err != nil {
		t.Fatal(err)
	}
	p1 := recvPacket(t, b)
	if _, err := a.WriteToAddress(bytes.Repeat([]byte{2}, 1400), memberlist.Address{Addr: to, Name: "b"}); err != nil {
		t.Fatal(err)
	}
	p2 := recvPacket(t, b)
	if !bytes.Equal(p1.Buf, first) {
		t.Errorf("first packet reads %d bytes %x… after the second; want its 100 bytes of 1", len(p1.Buf), p1.Buf[:min(8, len(p1.Buf))])
	}
	if len(p2.Buf) != 1400 || p2.Buf[0] != 2 {
		t.Errorf("second packet: %d bytes; want 1400 bytes of 2", len(p2.Buf))
	}
	for _, p := range []*memberlist.Packet{p1, p2} {
		if cap(p.Buf) > len(p.Buf)+64 {
			t.Errorf("a %d-byte packet is held in a %d-byte buffer", len(p.Buf), cap(p.Buf))
		}
		if want := fmt.Sprintf("127.0.0.1:%d", a.Port()); p.From.String() != want {
			t.Errorf("packet from %s; want %s", p.From, want)
		}
		if time.Since(p.Timestamp) > time.Minute || p.Timestamp.IsZero() {
			t.Errorf("packet stamped %v", p.Timestamp)
		}
	}
	for _, bad := range []string{"not an address", "localhost:7946"} {
		if _, err := a.WriteTo([]byte{1}, bad); err == nil {
			t.Errorf("WriteTo(%q) succeeded", bad)
		}
	}
}

// TestTransportStreams: a dialled stream arrives on the other's StreamCh.
func TestTransportStreams(t *testing.T) {
	a, b := testTransports(t)
	c, err := a.DialAddressTimeout(memberlist.Address{Addr: fmt.Sprintf("127.0.0.1:%d", b.Port())}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	c.Close()
	select {
	case s := <-b.StreamCh():
		defer s.Close()
		got, err := io.ReadAll(s)
		if err != nil || string(got) != "hello" {
			t.Errorf("stream read %q, %v; want hello", got, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no stream within 10 s")
	}
}

// TestTransportAdvertise: the advertised address is the one given, else
// the bound one.
func TestTransportAdvertise(t *testing.T) {
	a, _ := testTransports(t)
	ip, port, err := a.FinalAdvertiseAddr("192.0.2.7", 7946)
	if err != nil || ip.String() != "192.0.2.7" || port != 7946 {
		t.Errorf("FinalAdvertiseAddr(192.0.2.7, 7946) = %v, %d, %v", ip, port, err)
	}
	ip, port, err = a.FinalAdvertiseAddr("", 0)
	if err != nil || ip.String() != "127.0.0.1" || port != a.Port() {
		t.Errorf("FinalAdvertiseAddr(\"\", 0) = %v, %d, %v; want 127.0.0.1, %d", ip, port, err, a.Port())
	}
	if _, _, err := a.FinalAdvertiseAddr("nonsense", 1); err == nil {
		t.Error("FinalAdvertiseAddr(nonsense) succeeded")
	}
}

// BenchmarkTransportReceive: one 200-byte packet sent and received on
// loopback, per op, through this transport and through memberlist's
// NetTransport (B/op is the receive buffer).
func BenchmarkTransportReceive(b *testing.B) {
	run := func(b *testing.B, rx memberlist.Transport, port int) {
		tx, _ := testTransports(b)
		to := fmt.Sprintf("127.0.0.1:%d", port)
		msg := make([]byte, 200)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := tx.WriteTo(msg, to); err != nil {
				b.Fatal(err)
			}
			<-rx.PacketCh()
		}
	}
	b.Run("weft", func(b *testing.B) {
		rx, _ := testTransports(b)
		run(b, rx, rx.Port())
	})
	b.Run("memberlist", func(b *testing.B) {
		rx, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{"127.0.0.1"}})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = rx.Shutdown() })
		run(b, rx, rx.GetAutoBindPort())
	})
}
