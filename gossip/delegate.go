package gossip

import (
	"time"

	"github.com/hashicorp/memberlist"
)

// delegate adapts the Mesh to memberlist's callbacks. memberlist calls them
// on its packet and timer goroutines, so none of them blocks: received bytes
// are copied and queued to the channel goroutines, and the peer table is
// updated under a short lock.
type delegate struct{ m *Mesh }

var (
	_ memberlist.Delegate      = delegate{}
	_ memberlist.EventDelegate = delegate{}
	_ memberlist.PingDelegate  = delegate{}
)

func (d delegate) NodeMeta(limit int) []byte {
	d.m.mu.Lock()
	b := d.m.metaBytes
	d.m.mu.Unlock()
	if len(b) > limit {
		return nil
	}
	return b
}

func (d delegate) NotifyMsg(b []byte) {
	f, err := decodeFrame(b)
	if err != nil || f.kind == kindState {
		d.m.badFrames.Add(1)
		d.m.log.Debug("dropped bad message", "bytes", len(b), "err", err)
		return
	}
	if f.origin == d.m.cfg.ID {
		return // our own broadcast relayed back
	}
	switch f.kind {
	case kindBye, kindStop:
		d.m.heardBye(f.origin, f.kind == kindStop)
		return
	case kindDigest:
		dg, err := decodeDigest(f.payload)
		if err != nil {
			d.m.badFrames.Add(1)
			d.m.log.Debug("dropped bad digest", "err", err)
			return
		}
		// Copy: memberlist reuses b.
		for i := range dg.entries {
			dg.entries[i].summary = append([]byte(nil), dg.entries[i].summary...)
		}
		select {
		case d.m.digestIn <- dg:
		default: // behind: the next round repeats it
		}
		return
	}
	c := d.m.channel(f.channel)
	if c == nil {
		d.m.log.Debug("message for unknown channel", "channel", f.channel)
		return
	}
	var relay []byte
	if f.kind == kindBroadcast && len(b) <= broadcastLimit {
		relay = b
	}
	c.deliver(f.origin, f.payload, relay)
}

func (d delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.m.queue.GetBroadcasts(overhead, limit)
}

func (d delegate) LocalState(join bool) []byte {
	if !join && d.m.cfg.DigestInterval > 0 {
		// Periodic push-pull: the digests' anti-entropy repairs channel
		// state far more cheaply; only a joiner needs everything at once.
		return nil
	}
	channels := d.m.channelList()
	frames := make([]frame, 0, len(channels))
	for _, c := range channels {
		st := c.handler.FullState()
		if len(st) > MaxState {
			d.m.log.Warn("full state too large for push-pull", "channel", c.name, "bytes", len(st))
			continue
		}
		frames = append(frames, frame{kind: kindState, channel: c.name, origin: d.m.cfg.ID, payload: st})
	}
	return encodeState(frames)
}

func (d delegate) MergeRemoteState(b []byte, join bool) {
	frames, err := decodeState(b)
	if err != nil {
		d.m.badFrames.Add(1)
		d.m.log.Warn("dropped bad push-pull state", "bytes", len(b), "err", err)
		return
	}
	for _, f := range frames {
		if f.origin == d.m.cfg.ID {
			continue
		}
		if c := d.m.channel(f.channel); c != nil {
			c.deliver(f.origin, f.payload, nil)
		}
	}
}

func (d delegate) NotifyJoin(n *memberlist.Node)   { d.m.observe(n, "join") }
func (d delegate) NotifyLeave(n *memberlist.Node)  { d.m.observe(n, "leave") }
func (d delegate) NotifyUpdate(n *memberlist.Node) { d.m.observe(n, "update") }

func (d delegate) AckPayload() []byte { return nil }
func (d delegate) NotifyPingComplete(n *memberlist.Node, rtt time.Duration, _ []byte) {
	d.m.pinged(n.Name, rtt)
}
