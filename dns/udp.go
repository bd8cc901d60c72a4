package dns

import (
	"errors"
	"net"
	"time"

	miekg "github.com/miekg/dns"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// The UDP read loop. Each socket has one reader goroutine (miekg's serve
// loop calling udpReader.ReadPacketConn). It takes every datagram waiting
// on the socket with one recvmmsg, answers the zone queries among them
// with the fast path, sends those answers with one sendmmsg, and queues
// the rest for miekg's slow path (unpack, a goroutine, ServeDNS). Under
// load this turns two system calls per query into two per batch, which is
// most of the cost of a query once the answer is precomputed.

const (
	batchSize = 32   // datagrams per recvmmsg/sendmmsg
	readSize  = 4096 // largest query read; longer ones are dropped (MSG_TRUNC)
	writeSize = 4096 // response buffer per message (a larger answer reallocates)
)

// udpConn hides the *net.UDPConn type from miekg so that it reads through
// udpReader.ReadPacketConn (we bind exact addresses, so the source-address
// control messages miekg handles for wildcard binds are not needed).
type udpConn struct{ *net.UDPConn }

// batchConn is ipv4.PacketConn or ipv6.PacketConn (their Message types
// are the same).
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// slowPacket is a datagram queued for the slow path.
type slowPacket struct {
	data []byte
	from net.Addr
}

// udpReader is one socket's read loop state; only its goroutine uses it.
type udpReader struct {
	miekg.Reader
	s       *Server
	bc      batchConn // set at the first read
	in, out []ipv4.Message
	outBufs [][]byte
	pending []slowPacket
}

func (s *Server) decorateReader(r miekg.Reader) miekg.Reader {
	u := &udpReader{Reader: r, s: s, in: make([]ipv4.Message, batchSize), out: make([]ipv4.Message, batchSize)}
	for i := range u.in {
		u.in[i].Buffers = [][]byte{make([]byte, readSize)}
		u.out[i].Buffers = [][]byte{nil}
		u.outBufs = append(u.outBufs, make([]byte, 0, writeSize))
	}
	return u
}

// ReadPacketConn answers zone queries itself and returns to miekg, one
// at a time, the datagrams the fast path declines.
func (r *udpReader) ReadPacketConn(conn net.PacketConn, _ time.Duration) ([]byte, net.Addr, error) {
	uc, ok := conn.(*udpConn)
	if !ok {
		return nil, nil, errors.New("dns: fast path on a foreign packet conn")
	}
	if r.bc == nil {
		r.bc = ipv4.NewPacketConn(uc.UDPConn)
		if la, _ := uc.LocalAddr().(*net.UDPAddr); la != nil && la.IP.To4() == nil {
			r.bc = ipv6.NewPacketConn(uc.UDPConn)
		}
	}
	for len(r.pending) == 0 {
		n, err := r.bc.ReadBatch(r.in, 0)
		if err != nil {
			return nil, nil, err
		}
		r.answer(r.bc, n)
	}
	p := r.pending[0]
	r.pending[0] = slowPacket{}
	r.pending = r.pending[1:]
	return p.data, p.from, nil
}

// answer handles n received datagrams.
func (r *udpReader) answer(bc batchConn, n int) {
	st := &r.s.stats
	z := r.s.zone()
	w := 0
	for i := 0; i < n; i++ {
		m := &r.in[i]
		if m.Flags&msgTrunc != 0 {
			st.errors.Add(1)
			continue
		}
		pkt := m.Buffers[0][:m.N]
		resp, outcome := z.answerFast(pkt, r.outBufs[w][:0])
		switch outcome {
		case fastDrop:
			st.errors.Add(1)
			continue
		case fastSlow:
			r.pending = append(r.pending, slowPacket{data: append([]byte(nil), pkt...), from: m.Addr})
			continue
		case fastNXDomain:
			st.nxdomain.Add(1)
		}
		st.queries.Add(1)
		st.local.Add(1)
		r.out[w].Buffers[0] = resp
		r.out[w].Addr = m.Addr
		w++
	}
	for off := 0; off < w; {
		k, err := bc.WriteBatch(r.out[off:w], 0)
		if err != nil || k == 0 {
			st.errors.Add(uint64(w - off))
			break
		}
		off += k
	}
	for i := 0; i < w; i++ {
		r.out[i].Addr = nil
	}
}
