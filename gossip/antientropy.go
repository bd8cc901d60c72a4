package gossip

// Cheap anti-entropy. memberlist's push-pull carries the whole state of
// every channel, over TCP, every PushPullInterval stretched by log N: at a
// thousand peers that is a minute between repairs of a missed delta, and
// each repair moves everything. Instead, every DigestInterval (fixed, not
// stretched) each peer sends one random alive peer a digest: per channel a
// small summary of its state (Summarizer; at most maxSummary bytes, so the
// digest fits one UDP packet whatever N). The receiver compares it with its
// own; only when they differ does it send back what may differ (the
// handler's Repair: bounded chunks, UDP when they fit a packet, TCP
// otherwise) and its own digest, marked as a reply, so that the first peer
// sends its side too. Equal states cost one packet each way per interval.
// The full state goes over push-pull only when a peer joins (memberlist's
// join exchange), so a newcomer has everything at once.
//
// Digest payload (frame kind 6, channel "mesh"):
//
//	flags (1)        1 = reply: do not answer with a digest
//	name length (1), sender's memberlist name
//	count (1)        channels, at most maxDigestChannels
//	per channel:     name length (1), name, summary length (2), summary

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/weftmesh/weft/peer"
)

// Summarizer is implemented by handlers that support cheap anti-entropy.
// Handlers without it get a summary that is a hash of FullState, and a
// repair that is the FullState, sent by TCP.
type Summarizer interface {
	// Summary returns a digest of the state, at most maxSummary (1024)
	// bytes whatever the state's size. Equal states must give equal
	// summaries. Called on the mesh's goroutine; must not block.
	Summary() []byte
	// Repair returns messages, each one a valid Merge input and at most
	// MaxMessage bytes (ideally under ~1,000 bytes to fit a packet), that
	// carry every part of the state that may differ from the state whose
	// summary is remote; nil when the summaries say the states are equal
	// or remote is from an incompatible state. The mesh sends them to the
	// peer that sent remote.
	Repair(remote []byte) [][]byte
}

const (
	kindDigest        = 6
	maxSummary        = 1024
	maxDigestChannels = 16
	digestReply       = 1
	// packetBudget is the largest frame sent by UDP outside the broadcast
	// queue: under a 1,280-byte IPv6 minimum MTU with memberlist's
	// encryption and label overhead.
	packetBudget = 1150
	// repairSenders bounds the TCP repairs in flight.
	repairSenders = 4
)

type digestEntry struct {
	channel string
	summary []byte
}

type digest struct {
	reply   bool
	from    string // sender's memberlist name
	entries []digestEntry
}

func encodeDigest(d digest) []byte {
	var flags byte
	if d.reply {
		flags = digestReply
	}
	b := []byte{flags, byte(len(d.from))}
	b = append(b, d.from...)
	b = append(b, byte(len(d.entries)))
	for _, e := range d.entries {
		b = append(b, byte(len(e.channel)))
		b = append(b, e.channel...)
		b = binary.BigEndian.AppendUint16(b, uint16(len(e.summary)))
		b = append(b, e.summary...)
	}
	return b
}

// decodeDigest parses a digest payload; summaries alias b.
func decodeDigest(b []byte) (digest, error) {
	var d digest
	bad := func(what string) (digest, error) {
		return digest{}, fmt.Errorf("digest: %s: %w", what, ErrBadFrame)
	}
	if len(b) < 3 {
		return bad("short")
	}
	if b[0]&^digestReply != 0 {
		return bad("unknown flags")
	}
	d.reply = b[0]&digestReply != 0
	n := int(b[1])
	if n == 0 || len(b) < 2+n+1 {
		return bad("sender name")
	}
	d.from = string(b[2 : 2+n])
	b = b[2+n:]
	count := int(b[0])
	b = b[1:]
	if count > maxDigestChannels {
		return bad("too many channels")
	}
	for range count {
		if len(b) < 1 {
			return bad("truncated channel")
		}
		cn := int(b[0])
		if cn == 0 || cn > maxChanName || len(b) < 1+cn+2 {
			return bad("channel name")
		}
		name := string(b[1 : 1+cn])
		sl := int(binary.BigEndian.Uint16(b[1+cn:]))
		b = b[1+cn+2:]
		if sl > maxSummary || len(b) < sl {
			return bad("summary length")
		}
		d.entries = append(d.entries, digestEntry{channel: name, summary: b[:sl:sl]})
		b = b[sl:]
	}
	if len(b) != 0 {
		return bad("trailing bytes")
	}
	return d, nil
}

// summary returns the channel's summary.
func (c *Channel) summary() []byte {
	if s, ok := c.handler.(Summarizer); ok {
		return s.Summary()
	}
	h := fnv.New64a()
	h.Write(c.handler.FullState())
	return h.Sum(nil)
}

// repair returns what the peer with summary remote may lack.
func (c *Channel) repair(remote []byte) [][]byte {
	if s, ok := c.handler.(Summarizer); ok {
		return s.Repair(remote)
	}
	if string(c.summary()) == string(remote) {
		return nil
	}
	return [][]byte{c.handler.FullState()}
}

// localDigest builds this peer's digest of every channel.
func (m *Mesh) localDigest(reply bool) []byte {
	d := digest{reply: reply, from: m.cfg.Name}
	d.entries = append(d.entries, digestEntry{channel: membersChannel, summary: m.membersSummary()})
	for _, c := range m.channelList() {
		s := c.summary()
		if len(s) > maxSummary {
			m.log.Warn("summary too large; channel left out of anti-entropy", "channel", c.name, "bytes", len(s))
			continue
		}
		d.entries = append(d.entries, digestEntry{channel: c.name, summary: s})
	}
	return appendFrame(nil, frame{kind: kindDigest, channel: "mesh", origin: m.cfg.ID, payload: encodeDigest(d)})
}

// antiEntropy sends a digest to one random alive peer every DigestInterval
// and answers the digests others send, until ctx is done.
func (m *Mesh) antiEntropy(ctx context.Context) {
	t := time.NewTicker(m.cfg.DigestInterval)
	defer t.Stop()
	sem := make(chan struct{}, repairSenders)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n := m.randomAlive(); n != nil {
				m.sendPacket(ctx, sem, n, m.localDigest(false))
			}
		case d := <-m.digestIn:
			m.answerDigest(ctx, sem, d)
		}
	}
}

// answerDigest sends the sender what it may lack and, unless the digest
// was itself a reply, this peer's digest so that the sender does the same.
func (m *Mesh) answerDigest(ctx context.Context, sem chan struct{}, d digest) {
	// A sender this peer lists as dead is answered too: it is alive
	// enough to send, and the membership push-pull its digest triggers
	// tells it that it was declared dead, so it refutes (a false death
	// would otherwise wait for memberlist's stretched push-pull).
	m.mu.Lock()
	var n *memberlist.Node
	if e := m.peers[d.from]; e != nil {
		n = e.node
	}
	m.mu.Unlock()
	if n == nil {
		return
	}
	differ := false
	for _, e := range d.entries {
		if e.channel == membersChannel {
			if string(e.summary) != string(m.membersSummary()) {
				m.syncMembers(d.from)
			}
			continue
		}
		c := m.channel(e.channel)
		if c == nil {
			continue
		}
		msgs := c.repair(e.summary)
		if len(msgs) == 0 {
			continue
		}
		differ = true
		m.repairs.Add(1)
		for _, msg := range msgs {
			if len(msg) > MaxMessage {
				m.log.Warn("repair message too large", "channel", c.name, "bytes", len(msg))
				continue
			}
			m.sendPacket(ctx, sem, n, appendFrame(nil, frame{kind: kindUnicast, channel: c.name, origin: m.cfg.ID, payload: msg}))
		}
	}
	if differ && !d.reply {
		m.sendPacket(ctx, sem, n, m.localDigest(true))
	}
}

// sendPacket sends f to n by UDP when it fits a packet, else by TCP on a
// bounded pool of goroutines (dropped when all are busy: the next round of
// anti-entropy repairs it).
func (m *Mesh) sendPacket(ctx context.Context, sem chan struct{}, n *memberlist.Node, f []byte) {
	if len(f) <= packetBudget {
		if err := m.ml.SendBestEffort(n, f); err != nil {
			m.log.Debug("anti-entropy send", "to", n.Name, "err", err)
		}
		return
	}
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return
	default:
		m.log.Debug("anti-entropy repair dropped: senders busy", "to", n.Name)
		return
	}
	m.wg.Add(1)
	go func() {
		defer func() { <-sem; m.wg.Done() }()
		if err := m.ml.SendReliable(n, f); err != nil {
			m.log.Debug("anti-entropy send", "to", n.Name, "err", err)
		}
	}()
}

// randomAlive returns a random alive peer's node, or nil when alone.
func (m *Mesh) randomAlive() *memberlist.Node {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.aliveDirty {
		m.alive = m.alive[:0]
		for _, e := range m.peers {
			if e.node != nil && e.info.State == peer.Alive {
				m.alive = append(m.alive, e.node)
			}
		}
		m.aliveDirty = false
	}
	if len(m.alive) == 0 {
		return nil
	}
	return m.alive[rand.IntN(len(m.alive))]
}
