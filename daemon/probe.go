package daemon

// The datapath probe (adjacency.go says why): one UDP socket on the
// underlay, port --probe-port. A request carries the sender's peer ID and a
// sequence number; the answer carries the responder's ID and the same
// number, sent back to the request's source. Both are 21 bytes, so the
// probe cannot amplify anything, and answers are counted only from the
// address this peer probed for that ID.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/weftmesh/weft/peer"
)

const (
	probeMagic = "wfp1"
	probeLen   = 21
	probeReq   = 1
	probeReply = 2
)

// probeMsg is one probe packet.
type probeMsg struct {
	Kind byte // probeReq or probeReply
	From peer.ID
	Seq  uint64
}

var errBadProbe = errors.New("bad probe packet")

func (m probeMsg) append(b []byte) []byte {
	b = append(b, probeMagic...)
	b = append(b, m.Kind)
	b = binary.BigEndian.AppendUint64(b, uint64(m.From))
	return binary.BigEndian.AppendUint64(b, m.Seq)
}

// parseProbe decodes a probe packet; anything else is an error.
func parseProbe(b []byte) (probeMsg, error) {
	if len(b) != probeLen || string(b[:4]) != probeMagic {
		return probeMsg{}, fmt.Errorf("%w: %d bytes", errBadProbe, len(b))
	}
	m := probeMsg{Kind: b[4], From: peer.ID(binary.BigEndian.Uint64(b[5:])), Seq: binary.BigEndian.Uint64(b[13:])}
	if (m.Kind != probeReq && m.Kind != probeReply) || m.From == 0 {
		return probeMsg{}, fmt.Errorf("%w: kind %d from %v", errBadProbe, m.Kind, m.From)
	}
	return m, nil
}

// prober sends probes and answers them. Run owns the socket's reader;
// Probe and LastReply may be called from any goroutine.
type prober struct {
	self peer.ID
	port uint16
	conn *net.UDPConn

	mu      sync.Mutex // guards following
	seq     uint64
	addrs   map[peer.ID]netip.Addr // where each peer was last probed
	replies map[peer.ID]time.Time
}

// newProber binds host:port; host "", 0.0.0.0 or :: binds every address,
// IPv4 and IPv6.
func newProber(self peer.ID, host string, port uint16) (*prober, error) {
	laddr := &net.UDPAddr{Port: int(port)}
	if a, err := netip.ParseAddr(host); err == nil && !a.IsUnspecified() {
		laddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, port))
	}
	conn, err := net.ListenUDP("udp", laddr)
	if err != nil {
		return nil, fmt.Errorf("datapath probe listen %s:%d: %w", host, port, err)
	}
	return &prober{self: self, port: port, conn: conn, addrs: map[peer.ID]netip.Addr{}, replies: map[peer.ID]time.Time{}}, nil
}

// Run answers requests and records replies until ctx is done; it closes
// the socket on return.
func (p *prober) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { _ = p.conn.Close() })
	defer stop()
	defer p.conn.Close()
	buf := make([]byte, 64)
	for {
		n, from, err := p.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			continue
		}
		m, err := parseProbe(buf[:n])
		if err != nil {
			continue
		}
		switch m.Kind {
		case probeReq:
			out := probeMsg{Kind: probeReply, From: p.self, Seq: m.Seq}.append(nil)
			_, _ = p.conn.WriteToUDPAddrPort(out, from)
		case probeReply:
			p.mu.Lock()
			if a, ok := p.addrs[m.From]; ok && a == from.Addr().Unmap() {
				p.replies[m.From] = time.Now()
			}
			p.mu.Unlock()
		}
	}
}

// Probe sends one request to each peer (ID → underlay address) and
// forgets the peers not listed.
func (p *prober) Probe(targets map[peer.ID]netip.Addr) {
	p.mu.Lock()
	p.seq++
	seq := p.seq
	for id := range p.addrs {
		if _, ok := targets[id]; !ok {
			delete(p.addrs, id)
			delete(p.replies, id)
		}
	}
	for id, a := range targets {
		a = a.Unmap()
		if old, ok := p.addrs[id]; ok && old != a {
			delete(p.replies, id) // answers from the old address say nothing of the new
		}
		p.addrs[id] = a
	}
	p.mu.Unlock()
	msg := probeMsg{Kind: probeReq, From: p.self, Seq: seq}.append(nil)
	for _, a := range targets {
		_, _ = p.conn.WriteToUDPAddrPort(msg, netip.AddrPortFrom(a, p.port))
	}
}

// LastReply is when the peer last answered (zero: never).
func (p *prober) LastReply(id peer.ID) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.replies[id]
}
