package dns

import (
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	miekg "github.com/miekg/dns"
)

// BenchmarkServe measures queries answered by a live server on 127.0.0.1
// over UDP, from parallel miekg clients, for 1,000 names.
func BenchmarkServe(b *testing.B) {
	s, err := New(testConfig(self), nopTransport{})
	if err != nil {
		b.Fatal(err)
	}
	const names = 1000
	queries := make([][]byte, names)
	for i := range names {
		if err := s.Add(fmt.Sprintf("name-%d", i), netip.AddrFrom4([4]byte{10, 32, byte(i / 250), byte(i%250 + 1)}), ""); err != nil {
			b.Fatal(err)
		}
		queries[i], _ = query(fmt.Sprintf("name-%d.weft.local.", i), miekg.TypeA, false).Pack()
	}
	addr := runBenchServer(b, s)
	var next atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
		if err != nil {
			b.Error(err)
			return
		}
		defer conn.Close()
		buf := make([]byte, 512)
		for pb.Next() {
			q := queries[next.Add(1)%names]
			if _, err := conn.Write(q); err != nil {
				b.Error(err)
				return
			}
			_ = conn.SetReadDeadline(time.Now().Add(time.Second))
			n, err := conn.Read(buf)
			if err != nil {
				b.Error(err)
				return
			}
			if n < 12 || buf[3]&0x0f != 0 || buf[7] != 1 {
				b.Errorf("bad answer %x", buf[:n])
				return
			}
		}
	})
}
