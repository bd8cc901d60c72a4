package daemon

// Adjacency: which peers this peer reaches directly on the datapath.
//
// Gossip cannot tell: memberlist keeps a peer alive through indirect probes
// when the direct path is broken, so a firewall, one-way NAT or a dead
// switch port between two peers would silently black-hole their pods. Each
// peer therefore measures every link itself (probe.go sends the probes) and
// publishes the peers it cannot reach (peer.Meta.Unreachable); the router
// routes around them through a relay (router/paths.go).
//
// The measurement, per peer:
//   - A UDP probe every second from our underlay address to the peer's
//     (port --probe-port, 6785), answered by the peer. Same addresses as
//     the tunnel (WireGuard, VXLAN) or the direct route, so what blocks
//     them at L3 blocks the probe: an nftables drop, a security group, a
//     dead port. Request/response, so a one-way block breaks it both ways.
//     ICMP over the tunnel was the alternative for vxlan/direct, but the
//     tunnel route of a relayed peer goes via the relay by design, so it
//     cannot measure the direct path; a probe on the underlay can, for
//     every transport alike.
//   - WireGuard: the handshake age. A relayed peer keeps its WireGuard peer
//     (no AllowedIPs) with persistent keepalives, so handshakes go on over
//     the direct path; a link whose probes pass while the WireGuard session
//     has not handshaken for wgStale (a firewall that drops only the
//     WireGuard port) is down too.
//
// Hysteresis, so that a flapping link does not churn routes: a link goes
// down after downAfter without a reply (3 lost probes); it comes back up
// only after upAfter of replies without a gap, twice that for a link that
// went down twice within flapWindow. The relayed path then switches back
// to direct within about 10-20 s of the link healing (the issue asks 30 s).
// A peer just met starts up: that is how the datapath works without
// relaying, and the first 3 s of silence correct it.
//
// Probe rate. One probe a second to every peer is O(N) datagrams and
// wakeups per peer per second: at 40 peers, half of an idle peer's CPU.
// An idle WireGuard link needs less: its byte counters tell whether it
// carries traffic, and an idle link that breaks black-holes nothing until
// traffic starts. So a WireGuard link is probed every slowEvery (down after
// three of those without a reply) while it is idle, and every second while
//   - it carries traffic: a decayed byte sum (time constant busyDecay) above
//     busyBytes, more than keepalives and handshakes move; or more than
//     lonelyBytes sent with nothing received in one observation, the first
//     packets into a link that may be broken; and for busyHold after;
//   - it is down, or changed state within upAfter;
//   - its counters cannot be read, or it is not WireGuard (VXLAN and direct
//     routes have no per-peer counters).
// When a link goes to the full rate, the silence before counts no more:
// 3 s without a reply from then on take it down.

import (
	"context"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/weftmesh/weft/gossip"
	"github.com/weftmesh/weft/peer"
	"github.com/weftmesh/weft/router"
)

const (
	probeEvery = time.Second      // probe period per peer
	downAfter  = 3 * time.Second  // no reply for this long: down
	upAfter    = 10 * time.Second // replies without a gap for this long: up again
	flapWindow = 2 * time.Minute  // two downs within it: upAfter doubles
	// wgStale is how long a WireGuard session may go without a handshake
	// while its probes pass: WireGuard renews every 2 min under traffic
	// (keepalives count) and drops a session after 3 min.
	wgStale = 200 * time.Second

	slowEvery     = 5 * time.Second // probe period of an idle WireGuard link
	slowDownAfter = 3 * slowEvery   // its silence before it is down
	busyDecay     = 5 * time.Second // time constant of a link's byte sum
	// busyBytes: a decayed sum above this is traffic. Persistent keepalives
	// (32 B each way every 25 s) and a handshake (148 + 92 B every 2 min
	// under traffic) stay below it.
	busyBytes   = 400
	lonelyBytes = 64               // sent in one observation with nothing received
	busyHold    = 30 * time.Second // full rate this long after traffic
)

// linkState is what this peer knows of its direct link to one peer.
type linkState struct {
	Down      bool
	LastReply time.Time // last probe reply (at first: when probing began)
	// OKSince starts the current run of replies without a gap; zero while
	// the peer is silent.
	OKSince time.Time
	Changed time.Time   // last transition
	Downs   []time.Time // recent down transitions (within flapWindow)

	// Probe rate.
	Fast      bool      // probed every second (else every slowEvery)
	FastSince time.Time // when it last went to the full rate
	NextProbe time.Time // when it is next probed
	Rx, Tx    int64     // WireGuard counters at Sampled
	Sampled   time.Time // zero: no counters
	Load      float64   // decayed byte sum (busyDecay)
	BusyUntil time.Time // full rate until then
}

// linkObs is one observation of a link.
type linkObs struct {
	LastReply time.Time // newest probe reply received (zero: none yet)
	// ProbingSince is when this peer last resumed probing after a stall
	// of its own (a loop that fell behind): silence before that is ours.
	ProbingSince time.Time
	WireGuard    bool      // the peer is reached over WireGuard
	Handshake    time.Time // its last WireGuard handshake (zero: none)
	Counters     bool      // RxBytes and TxBytes are the WireGuard peer's
	RxBytes      int64
	TxBytes      int64
}

// newLink is the state of a link to a peer just met: up, probed at the
// full rate.
func newLink(now time.Time) linkState {
	return linkState{LastReply: now, OKSince: now, Changed: now, Fast: true, FastSince: now}
}

// stepTraffic folds the link's WireGuard counters into its byte sum.
func stepTraffic(s linkState, o linkObs, now time.Time) linkState {
	if !o.Counters {
		s.Sampled, s.Load = time.Time{}, 0
		return s
	}
	// A counter that went back is a WireGuard peer made anew: resample.
	if !s.Sampled.IsZero() && o.RxBytes >= s.Rx && o.TxBytes >= s.Tx {
		rx, tx := o.RxBytes-s.Rx, o.TxBytes-s.Tx
		s.Load = s.Load*math.Exp(-now.Sub(s.Sampled).Seconds()/busyDecay.Seconds()) + float64(rx+tx)
		if s.Load > busyBytes || (tx > lonelyBytes && rx == 0) {
			s.BusyUntil = now.Add(busyHold)
		}
	}
	s.Rx, s.Tx, s.Sampled = o.RxBytes, o.TxBytes, now
	return s
}

// fastProbe says whether the link is probed every second (see the top).
func fastProbe(s linkState, o linkObs, now time.Time) bool {
	return !o.WireGuard || !o.Counters || s.Down || now.Sub(s.Changed) < upAfter || now.Before(s.BusyUntil)
}

// probeDue says whether the link is probed now, and moves its next probe.
func probeDue(s linkState, now time.Time) (linkState, bool) {
	if !s.Fast && now.Before(s.NextProbe) {
		return s, false
	}
	every := slowEvery
	if s.Fast {
		every = probeEvery
	}
	s.NextProbe = now.Add(every)
	return s, true
}

// stepLink is the decision: the link's next state after observing o at
// now, and the rate it is probed at from now on.
func stepLink(s linkState, o linkObs, now time.Time) linkState {
	s.Downs = slices.Clone(s.Downs)
	if o.LastReply.After(s.LastReply) {
		if s.OKSince.IsZero() {
			s.OKSince = o.LastReply
		}
		s.LastReply = o.LastReply
	}
	heard := latest(s.LastReply, o.ProbingSince, s.FastSince)
	limit := downAfter
	if !s.Fast {
		limit = slowDownAfter
	}
	silent := now.Sub(heard) > limit
	if silent {
		s.OKSince = time.Time{}
	}
	wgStuck := o.WireGuard && !s.OKSince.IsZero() && now.Sub(s.OKSince) > wgStale && now.Sub(o.Handshake) > wgStale
	s.Downs = slices.DeleteFunc(s.Downs, func(t time.Time) bool { return now.Sub(t) > flapWindow })
	switch {
	case !s.Down && (silent || wgStuck):
		s.Down, s.Changed = true, now
		s.Downs = append(s.Downs, now)
	case s.Down && !silent && !wgStuck && !s.OKSince.IsZero() && now.Sub(s.OKSince) >= holdUp(s.Downs):
		s.Down, s.Changed = false, now
	}
	s = stepTraffic(s, o, now)
	fast := fastProbe(s, o, now)
	if fast && !s.Fast {
		s.FastSince = now
	}
	s.Fast = fast
	return s
}

// latest is the latest of ts.
func latest(ts ...time.Time) time.Time {
	var out time.Time
	for _, t := range ts {
		if t.After(out) {
			out = t
		}
	}
	return out
}

// holdUp is how long a down link must answer before it is up again.
func holdUp(downs []time.Time) time.Duration {
	if len(downs) >= 2 {
		return 2 * upAfter
	}
	return upAfter
}

// unreachable lists the peers whose link is down, sorted by ID.
func unreachable(links map[peer.ID]linkState) []peer.ID {
	var out []peer.ID
	for id, s := range links {
		if s.Down {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// publishedUnreachable is what goes into gossip: the first
// gossip.MaxUnreachable by ID (the wire form is bounded; the others are
// taken as direct by the peers that read it, while this peer's own routes
// use the whole set).
func publishedUnreachable(ids []peer.ID) []peer.ID {
	return ids[:min(len(ids), gossip.MaxUnreachable)]
}

// adjacencyLoop steps every link the datapath routes to once a second,
// probes those due, and publishes and routes on a change of the set of
// unreachable peers.
func (d *Daemon) adjacencyLoop(ctx context.Context, pr *prober) error {
	t := time.NewTicker(probeEvery)
	defer t.Stop()
	var sent, probingSince time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		stats := d.router.Stats() // may wait for a reconcile in progress
		now := time.Now()
		if now.Sub(sent) > 2*probeEvery {
			probingSince = now // we fell behind: the silence until now is ours
		}
		d.mu.Lock()
		targets := maps.Clone(d.probeTargets)
		if d.links == nil {
			d.links = map[peer.ID]linkState{}
		}
		next := make(map[peer.ID]linkState, len(targets))
		var send []peer.ID
		for id := range targets {
			s, ok := d.links[id]
			if !ok {
				s = newLink(now)
			}
			// Without WireGuard counters for the peer (none yet, or the
			// device could not be read) its handshake age says nothing.
			st, haveStats := stats[id]
			since := probingSince
			if d.upSince[id].After(since) {
				since = d.upSince[id] // silence before the peer came back is not the link's (sync.go)
			}
			s = stepLink(s, linkObs{LastReply: pr.LastReply(id), ProbingSince: since,
				WireGuard: haveStats && d.router.PeerTransport(id) == router.TransportWireGuard,
				Handshake: st.LastHandshake, Counters: haveStats, RxBytes: st.RxBytes, TxBytes: st.TxBytes}, now)
			if s.Down != d.links[id].Down && ok {
				d.log.Info("direct link", "peer", id, "down", s.Down)
			}
			var due bool
			if s, due = probeDue(s, now); due {
				send = append(send, id)
			}
			next[id] = s
		}
		d.links = next
		// A new set is published, to take effect switchDelay later on
		// every peer (switch.go), once the last one has taken effect: so
		// every peer saw the set it replaces in effect.
		un := unreachable(next)
		publish := !slices.Equal(un, d.ownReport.cur) && !now.Before(d.ownReport.at)
		at := now.Add(switchDelay).Truncate(time.Millisecond)
		if publish {
			d.ownReport = d.ownReport.observe(un, at, now)
		}
		d.mu.Unlock()
		pr.Probe(targets, send)
		sent = time.Now()
		if !publish {
			continue
		}
		if err := d.updateMeta(func(m *peer.Meta) {
			m.Unreachable, m.UnreachableAt = publishedUnreachable(un), at
		}); err != nil {
			d.log.Warn("publish unreachable peers", "err", err)
		}
		d.poke()
	}
}
