package daemon

// The datapath probe (adjacency.go says why): one UDP socket on the
// underlay, port --probe-port.
//
// Two protocols share it. The first, which every version speaks, is
// request/response: a request carries the sender's peer ID and a sequence
// number; the answer carries the responder's ID and the same number, sent
// back to the request's source. Both are 21 bytes, so the probe cannot
// amplify anything. It costs four packets per pair of peers per second,
// and at 40 peers the probes were half of an idle peer's CPU (each packet
// is a send or a wakeup on both sides).
//
// The second, between peers that both speak it, halves that, as BFD does:
// each peer sends every other one hello per second (per few seconds past
// probeBudget peers) carrying its own round number and the newest round
// number it received from that peer (the echo), and answers nothing. A hello that echoes a round of ours sent
// within the last second or so proves the path both ways: ours reached
// the peer, and its hello reached us. It counts as a reply received at the
// echoed round's send time plus one period (no later than its arrival),
// so a path broken one way is seen down as soon as with replies (its echo
// stops moving), give or take a period.
//
// A peer learns that the other speaks hellos from a hello, or from the
// top bit of a reply's number (set by new responders, ignored by old
// requesters, which never read it), and then sends it hellos instead of
// requests, while the peer's own hellos come. Whenever they are late (a
// peer just started, or one that does not probe us yet: it answers
// requests but sends no hellos), a request goes too, so the link never
// lacks evidence for want of a protocol. A request from a peer whose
// hellos stopped a few seconds ago (it went back to an older version)
// puts it back on requests only, which every version answers: two new
// peers settle on hellos within a round or two, and a peer rolled back is
// probed the old way from its first request on. Hellos and replies count only from the
// address this peer probed for that ID.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"

	"github.com/weftmesh/weft/peer"
	"golang.org/x/sys/unix"
)

const (
	probeMagic = "wfp1"
	probeLen   = 21 // request and reply
	helloLen   = 29 // hello: a request's fields and the echo
	probeReq   = 1
	probeReply = 2
	probeHello = 3

	// helloBit, in a reply's number, says the responder speaks hellos.
	helloBit = 1 << 63
	// helloFresh is how long after the last sign that a peer speaks
	// hellos this peer goes on sending it hellos. A request from a peer
	// whose hellos stopped helloQuiet ago means it went back to an older
	// version: requests only, then, which every version answers.
	helloFresh = 10 * time.Second
	helloQuiet = 3 * time.Second
	// helloLate: while a peer's hellos are this late, this peer sends it
	// a request besides its hello, so the link has evidence all the same:
	// a peer just started, or one that does not probe us (our address is
	// not among its targets yet), sends no hellos but answers requests.
	helloLate = 1500 * time.Millisecond
	// sentRounds is how many of its own rounds this peer remembers the
	// send time of, to read echoes: a link is probed every maxProbeTicks
	// rounds at most, and the peer's hello echoing one of them may come
	// that many of its own rounds later (an echo older than that proves
	// nothing recent anyway).
	sentRounds = 4 * maxProbeTicks
	// probeBatch is how many packets one recvmmsg takes; probeTxBatch
	// how many one sendmmsg gives (a round to more peers takes more).
	probeBatch   = 64
	probeTxBatch = 256
	// probeRcvBuf is the probe socket's receive buffer: a small UDP packet
	// takes about 1 KiB of it.
	probeRcvBuf = 4 << 20

	// probeBudget is how many links a peer probes per round at most. Up to
	// that many it probes each every round (a second); past it, each
	// every probeTicks rounds, spread over them, so that a peer sends and
	// receives about probeBudget hellos a second whatever N, up to
	// maxProbeTicks: at 100 peers every 2 s, at 500 every 10 s, and past
	// that the cost grows with N again, at a tenth of the rate. A hello
	// costs both ends a syscall's share and a trip through the kernel
	// (~20 µs a hello on the test bed, where one kernel does both ends),
	// and at one a second per link it made the probes O(N) per peer: 99
	// a second each way at 100 peers, 999 at 1,000, ~2 % of a core and
	// 114 KB/s per peer, 50 times the gossip at rest. The price is
	// detection: a link is given downAfter per interval (adjacency.go), 3
	// s up to 50 peers, 6 s at 100, 30 s from 500 on; but not on a link
	// that carries traffic (WireGuard counters: activeLinks), which is
	// probed every round whatever N, so that pods see a break in 3 s.
	probeBudget   = 50
	maxProbeTicks = 10
)

// probeTicks is every how many rounds a peer with n links probes each.
func probeTicks(n int) int {
	return min(max(1, (n+probeBudget-1)/probeBudget), maxProbeTicks)
}

// probeMsg is one probe packet.
type probeMsg struct {
	Kind byte // probeReq, probeReply or probeHello
	From peer.ID
	Seq  uint64
	Echo uint64 // hello only: the newest round received from the addressee
}

var errBadProbe = errors.New("bad probe packet")

func (m probeMsg) append(b []byte) []byte {
	b = append(b, probeMagic...)
	b = append(b, m.Kind)
	b = binary.BigEndian.AppendUint64(b, uint64(m.From))
	b = binary.BigEndian.AppendUint64(b, m.Seq)
	if m.Kind == probeHello {
		b = binary.BigEndian.AppendUint64(b, m.Echo)
	}
	return b
}

// parseProbe decodes a probe packet; anything else is an error.
func parseProbe(b []byte) (probeMsg, error) {
	if len(b) < probeLen || string(b[:4]) != probeMagic {
		return probeMsg{}, fmt.Errorf("%w: %d bytes", errBadProbe, len(b))
	}
	m := probeMsg{Kind: b[4], From: peer.ID(binary.BigEndian.Uint64(b[5:])), Seq: binary.BigEndian.Uint64(b[13:])}
	want := probeLen
	if m.Kind == probeHello {
		want = helloLen
	}
	if len(b) != want {
		return probeMsg{}, fmt.Errorf("%w: %d bytes of kind %d", errBadProbe, len(b), m.Kind)
	}
	if m.Kind == probeHello {
		m.Echo = binary.BigEndian.Uint64(b[21:])
	}
	if (m.Kind != probeReq && m.Kind != probeReply && m.Kind != probeHello) || m.From == 0 {
		return probeMsg{}, fmt.Errorf("%w: kind %d from %v", errBadProbe, m.Kind, m.From)
	}
	return m, nil
}

// prober sends probes and answers them. Probe, LastReply and the others
// may be called from any goroutine.
type prober struct {
	self peer.ID
	port uint16
	conn *probeSock // outside the network poller (probesock.go)

	mu      sync.Mutex // guards following
	seq     uint64     // this peer's round number
	sent    [sentRounds]sentRound
	addrs   map[peer.ID]probed    // where each peer was last probed
	replies map[peer.ID]time.Time // two-way evidence: a reply, or a hello's echo
	heard   map[peer.ID]uint64    // the newest round received from each (echoed in hellos)
	speaks  map[peer.ID]time.Time // the last sign that it speaks hellos (a hello or a marked reply)
	hellos  map[peer.ID]time.Time // the last hello received from it
	// ticks is every how many of its rounds each peer probes us, read
	// from the round numbers of its packets (probeTicks on its side; 1
	// for versions that probe every peer every round).
	ticks  map[peer.ID]int
	steps  map[peer.ID]int  // the last step of each peer's round numbers (heardLocked)
	every  int              // every how many rounds this peer probes an idle link (probeTicks)
	active map[peer.ID]bool // links probed every round (Probe's active)
	period time.Duration    // between the caller's rounds (newProber)

	sentHellos, sentRequests uint64 // packets sent, for /metrics (Sent)
	received, reads          uint64 // packets received and the recvmmsg calls that took them (Received)

	rxMu     sync.Mutex // guards following: drain's buffers
	in       []sockMsg
	inb      *batch
	replyBuf []byte
	out      []sockMsg

	txMu sync.Mutex // guards following: the kernel-side batch of every send (write)
	txb  *batch
}

// probed is where a peer is probed: its address, and that with our port
// as sendmmsg takes it (made once, not every round).
type probed struct {
	addr netip.Addr
	to   netip.AddrPort
}

// probedAt is the probed of address a.
func (p *prober) probedAt(a netip.Addr) probed {
	return probed{addr: a, to: netip.AddrPortFrom(a, p.port)}
}

// sentRound is the send time of one of this peer's rounds.
type sentRound struct {
	seq uint64
	at  time.Time
}

// roundTo is a round's packets to one peer.
type roundTo struct {
	to             netip.AddrPort
	echo           uint64
	hello, request bool
}

// newProber binds host:port; host "", 0.0.0.0 or :: binds every address,
// IPv4 and IPv6. The caller calls Probe every period (a hello's echo of a
// round counts as a reply received one period after the round was sent)
// and Close at the end.
func newProber(self peer.ID, host string, port uint16, period time.Duration) (*prober, error) {
	conn, err := listenProbe(host, port)
	if err != nil {
		return nil, fmt.Errorf("datapath probe listen %s:%d: %w", host, port, err)
	}
	// A period of every peer's hellos waits in the socket (drain):
	// ask for room for a few thousand peers' (the kernel caps it at
	// net.core.rmem_max unless we may force it).
	conn.setBuffers(probeRcvBuf)
	in := make([]sockMsg, probeBatch)
	bufs := make([]byte, probeBatch*64)
	for i := range in {
		in[i].Buf = bufs[i*64 : (i+1)*64 : (i+1)*64]
	}
	return &prober{
		self: self, port: port, conn: conn, period: period,
		in: in, inb: newBatch(probeBatch), replyBuf: make([]byte, 0, probeBatch*probeLen),
		out: make([]sockMsg, 0, probeBatch), txb: newBatch(probeTxBatch),
		// A random start: a reply or echo forged without seeing our
		// packets has to guess the round.
		seq:   rand.Uint64() >> 2,
		addrs: map[peer.ID]probed{}, replies: map[peer.ID]time.Time{},
		heard: map[peer.ID]uint64{}, speaks: map[peer.ID]time.Time{}, hellos: map[peer.ID]time.Time{},
		ticks: map[peer.ID]int{}, steps: map[peer.ID]int{}, every: 1,
	}, nil
}

// Close closes the socket.
func (p *prober) Close() error { return p.conn.Close() }

// drain takes every packet waiting in the socket, in batches (recvmmsg,
// not waiting for more), answers the requests among them and records the
// rest. Probe calls it before each round: the socket is read once a
// round, not as each packet comes. N−1 peers' hellos arrive spread over
// the period, and reading each as it came woke the process N−1 times a
// second, which cost an idle peer more than the packets did (the
// runtime's scheduler and sysmon: half its CPU at 40 peers). Nothing is
// lost by the wait: a hello is read before the round that echoes it, and
// its evidence is capped at the echoed round's send time plus one period
// anyway; a request is answered within a period, well inside the three a
// link is given (adjacency.go).
func (p *prober) drain() {
	p.rxMu.Lock()
	defer p.rxMu.Unlock()
	for {
		n, err := p.conn.recv(p.inb, p.in)
		if err != nil || n <= 0 {
			return // empty, or closed
		}
		now := time.Now()
		replies, out := p.replyBuf[:0], p.out[:0]
		for _, m := range p.in[:n] {
			if !m.Addr.IsValid() {
				continue
			}
			pm, err := parseProbe(m.Buf[:m.N])
			if err != nil {
				continue
			}
			if pm.Kind == probeReq {
				// Answer whoever asks (as every version does), telling it
				// we speak hellos.
				start := len(replies)
				replies = probeMsg{Kind: probeReply, From: p.self, Seq: pm.Seq | helloBit}.append(replies)
				out = append(out, sockMsg{Buf: replies[start:len(replies):len(replies)], Addr: m.Addr})
			}
			p.receive(pm, m.Addr.Addr(), now)
		}
		p.write(out)
		p.mu.Lock()
		p.received += uint64(n)
		p.reads++
		p.mu.Unlock()
		if n < len(p.in) {
			return
		}
	}
}

// receive records what m, from addr at now, says of the link to its sender.
func (p *prober) receive(m probeMsg, addr netip.Addr, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if t, ok := p.addrs[m.From]; !ok || t.addr != addr {
		return // not a peer we probe there
	}
	switch m.Kind {
	case probeReq:
		p.heardLocked(m.From, m.Seq)
		// A peer that sent hellos and now sends requests went back to an
		// older version. One that never sent us a hello has not learned
		// yet that we speak them (our marked reply tells it): two peers
		// whose rounds run in step each get the other's request after its
		// reply, and forgetting then kept both on requests for good.
		if h := p.hellos[m.From]; !h.IsZero() && now.Sub(h) > helloQuiet+p.slackLocked(p.ticks[m.From]) {
			delete(p.speaks, m.From)
			delete(p.hellos, m.From)
		}
	case probeReply:
		p.replies[m.From] = now
		if m.Seq&helloBit != 0 {
			p.speaks[m.From] = now
		}
	case probeHello:
		p.heardLocked(m.From, m.Seq)
		p.speaks[m.From] = now
		p.hellos[m.From] = now
		if at, ok := p.sentAtLocked(m.Echo); ok {
			// The peer echoes the newest of our rounds it took, and we
			// send it one every ownTicksLocked rounds.
			ev := at.Add(time.Duration(p.ownTicksLocked(m.From)) * p.period)
			if ev.After(now) {
				ev = now
			}
			if ev.After(p.replies[m.From]) {
				p.replies[m.From] = ev
			}
		}
	}
}

// heardLocked records round seq of peer id (a request or a hello): the
// newest, echoed in our hellos, and the step from the one before, which
// says every how many of its rounds it probes us: the smaller of the last
// two steps, so that a lost packet (one step twice as long) or the first
// packet after a break does not stretch the link's allowance. Requests
// and a hello of one round share its number; a step of more than
// maxProbeTicks (a restart: a new random start) says nothing.
func (p *prober) heardLocked(id peer.ID, seq uint64) {
	if prev, ok := p.heard[id]; ok && seq > prev && seq-prev <= maxProbeTicks {
		step := int(seq - prev)
		p.ticks[id] = min(step, max(p.steps[id], 1))
		p.steps[id] = step
	}
	p.heard[id] = seq
}

// slackLocked is how much later than every round a link's packets may
// come when they come every ticks rounds: the timings below were set for
// one round a second.
func (p *prober) slackLocked(ticks int) time.Duration {
	return time.Duration(max(ticks, 1)-1) * p.period
}

// ownTicksLocked is every how many rounds this peer probes id.
func (p *prober) ownTicksLocked(id peer.ID) int {
	if p.active[id] {
		return 1
	}
	return max(p.every, 1)
}

// linkTicksLocked is every how many rounds packets pass on the link to
// id, the slower of its ends.
func (p *prober) linkTicksLocked(id peer.ID) int {
	return max(p.ownTicksLocked(id), p.ticks[id], 1)
}

// Ticks is every how many rounds the link to id is probed, the slower of
// its two ends: the adjacency loop gives it that many times downAfter.
func (p *prober) Ticks(id peer.ID) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.linkTicksLocked(id)
}

// sentAtLocked is when this peer sent its round seq, if it remembers.
func (p *prober) sentAtLocked(seq uint64) (time.Time, bool) {
	r := p.sent[seq%sentRounds]
	return r.at, r.seq == seq && !r.at.IsZero()
}

// Probe reads what came since the last round (drain), then sends one
// round to the peers (ID → underlay address) whose turn it is: the
// active ones (links that carry traffic) every round, and the others
// every round up to probeBudget of them, each every probeTicks rounds
// past that, spread over the rounds (and a peer just listed at once). It
// sends a hello to each that speaks them, a request to the others and to
// those whose hellos are late. It forgets the peers not listed. The
// caller calls it every period, with no targets too: that is when
// requests are answered.
func (p *prober) Probe(targets map[peer.ID]netip.Addr, active map[peer.ID]bool) {
	p.drain()
	now := time.Now()
	p.mu.Lock()
	p.seq++
	seq := p.seq
	p.sent[seq%sentRounds] = sentRound{seq: seq, at: now}
	idle := len(targets)
	for id := range active {
		if _, ok := targets[id]; ok {
			idle--
		}
	}
	p.every, p.active = probeTicks(idle), active
	every := uint64(p.every)
	for id := range p.addrs {
		if _, ok := targets[id]; !ok {
			p.forgetLocked(id)
		}
	}
	round := make([]roundTo, 0, len(targets)/p.every+1)
	for id, a := range targets {
		a = a.Unmap()
		t, ok := p.addrs[id]
		if ok && t.addr != a {
			p.forgetLocked(id) // what came from the old address says nothing of the new
			ok = false
		}
		if !ok {
			t = p.probedAt(a)
			p.addrs[id] = t
		} else if !active[id] && (seq+uint64(id))%every != 0 {
			continue // not its turn
		}
		slack := p.slackLocked(p.linkTicksLocked(id))
		hello := !p.speaks[id].IsZero() && now.Sub(p.speaks[id]) <= helloFresh+slack
		request := !hello || now.Sub(p.hellos[id]) > helloLate+slack
		round = append(round, roundTo{to: t.to, echo: p.heard[id], hello: hello, request: request})
		if hello {
			p.sentHellos++
		}
		if request {
			p.sentRequests++
		}
	}
	p.mu.Unlock()
	p.send(round, seq)
}

// send writes a round's packets in as few sendmmsg calls as the kernel
// takes (one, usually): a round to N−1 peers was N−1 sendto calls, and
// each syscall costs more than its packet. A packet that cannot be sent
// (no route to that peer, say) is skipped, as a lone sendto's error was.
func (p *prober) send(round []roundTo, seq uint64) {
	req := probeMsg{Kind: probeReq, From: p.self, Seq: seq}.append(nil)
	// One backing array each, sized up front: the slices taken of them
	// stay valid.
	hellos := make([]byte, 0, len(round)*helloLen)
	ms := make([]sockMsg, 0, 2*len(round))
	add := func(b []byte, to netip.AddrPort) { ms = append(ms, sockMsg{Buf: b, Addr: to}) }
	for _, r := range round {
		if r.hello {
			start := len(hellos)
			hellos = probeMsg{Kind: probeHello, From: p.self, Seq: seq, Echo: r.echo}.append(hellos)
			add(hellos[start:len(hellos):len(hellos)], r.to)
		}
		if r.request {
			add(req, r.to)
		}
	}
	p.write(ms)
}

// write sends ms: the rounds and the answers to requests.
func (p *prober) write(ms []sockMsg) {
	p.txMu.Lock()
	defer p.txMu.Unlock()
	writeAll(p.conn, p.txb, ms)
}

// writeAll sends ms in as few sendmmsg calls as the kernel takes (b's
// size at most each); a message it refuses is skipped and the rest still
// go. When the send buffer is full (a round to a thousand peers on a NIC
// that completes transmits late) it waits for room, a few times at most:
// the loop that sends never stalls for long.
func writeAll(c *probeSock, b *batch, ms []sockMsg) {
	waits := 0
	for len(ms) > 0 {
		n, err := c.send(b, ms)
		switch {
		case errors.Is(err, errSockClosed):
			return
		case errors.Is(err, unix.EAGAIN) && waits < 3:
			waits++
			c.waitWritable(50 * time.Millisecond)
			continue
		case err != nil:
			n = max(n, 1) // the first failed: skip it
		}
		ms = ms[n:]
	}
}

// Sent returns how many hellos and requests this peer has sent.
func (p *prober) Sent() (hellos, requests uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sentHellos, p.sentRequests
}

// Received returns how many probe packets this peer has read and in how
// many reads (recvmmsg calls): the packets a read takes say how well the
// reads are batched.
func (p *prober) Received() (packets, reads uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.received, p.reads
}

// forgetLocked drops what this peer knows of id's link.
func (p *prober) forgetLocked(id peer.ID) {
	delete(p.addrs, id)
	delete(p.replies, id)
	delete(p.heard, id)
	delete(p.speaks, id)
	delete(p.hellos, id)
	delete(p.ticks, id)
	delete(p.steps, id)
}

// LastReply is when the peer last answered (zero: never): a reply, or a
// hello echoing a recent round of ours.
func (p *prober) LastReply(id peer.ID) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.replies[id]
}
