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
//     (port --probe-port, 6785; past probeBudget peers, every few
//     seconds unless the link carries traffic, probe.go), answered by
//     the peer; between peers of
//     this version, a hello each way instead, echoing the other's last
//     round (probe.go). Same addresses as the tunnel (WireGuard, VXLAN)
//     or the direct route, so what blocks them at L3 blocks the probe: an
//     nftables drop, a security group, a dead port. A reply or an echo
//     needs both directions, so a one-way block breaks it both ways.
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
// down after downAfter without a reply (3 lost probes; a link probed every
// few seconds, past probeBudget peers, is given 3 of its intervals, by
// the slower end's count: prober.Ticks); it comes back up
// only after upAfter of replies without a gap, twice that for a link that
// went down twice within flapWindow. The relayed path then switches back
// to direct within about 10-20 s of the link healing (the issue asks 30 s).
// A peer just met starts up: that is how the datapath works without
// relaying, and the first 3 s of silence correct it.

import (
	"context"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
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
	// statsEvery is how often the WireGuard device is read for handshake
	// ages. They matter only past wgStale, and a healthy session's is at
	// most ~135 s old (renewed every 2 min), so a reading this old cannot
	// make one look stale; reading every second cost each idle peer a
	// round trip to its userspace datapath, which lists every peer.
	statsEvery = 10 * time.Second
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
}

// linkObs is one observation of a link.
type linkObs struct {
	LastReply time.Time // newest probe reply received (zero: none yet)
	// ProbingSince is when this peer last resumed probing after a stall
	// of its own (a loop that fell behind): silence before that is ours.
	ProbingSince time.Time
	WireGuard    bool      // the peer is reached over WireGuard
	Handshake    time.Time // its last WireGuard handshake (zero: none)
	// Ticks is every how many probe periods the link is probed
	// (prober.Ticks; 0 or 1: every period): its silence allowance is
	// that many times downAfter.
	Ticks int
}

// newLink is the state of a link to a peer just met: up.
func newLink(now time.Time) linkState {
	return linkState{LastReply: now, OKSince: now, Changed: now}
}

// stepLink is the decision: the link's next state after observing o at now.
func stepLink(s linkState, o linkObs, now time.Time) linkState {
	s.Downs = slices.Clone(s.Downs)
	if o.LastReply.After(s.LastReply) {
		if s.OKSince.IsZero() {
			s.OKSince = o.LastReply
		}
		s.LastReply = o.LastReply
	}
	heard := s.LastReply
	if o.ProbingSince.After(heard) {
		heard = o.ProbingSince
	}
	silent := now.Sub(heard) > linkTimeout(o.Ticks)
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
	return s
}

// linkTimeout is the silence after which a link probed every ticks rounds
// is judged down: downAfter per interval (3 s up to probeBudget peers, 30 s
// at most, for an idle link past it). `weft status` shows it per peer.
func linkTimeout(ticks int) time.Duration {
	return downAfter * time.Duration(max(ticks, 1))
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

// activeBytes is how many bytes a WireGuard peer must have carried, both
// ways, between two readings of the device (statsEvery apart) for its
// link to count as carrying traffic: more than persistent keepalives
// (32 bytes every 25 s on an idle link) and handshakes (240 bytes every
// 2 min) account for.
const activeBytes = 1024

// activeLinks lists the peers whose WireGuard traffic grew by activeBytes
// or more from the reading prev to cur: their links are probed every
// round whatever the probe budget (prober.Probe), so that a break of a
// link pods use is seen in downAfter at any mesh size. The others (and
// every link of the vxlan and direct transports, which have no per-peer
// counters) are probed within the budget.
func activeLinks(prev, cur map[peer.ID]router.PeerStats) map[peer.ID]bool {
	out := map[peer.ID]bool{}
	for id, c := range cur {
		p, ok := prev[id]
		if !ok || c.RxBytes < p.RxBytes || c.TxBytes < p.TxBytes {
			continue // new, or counters reset (the peer re-added): next reading
		}
		if (c.RxBytes-p.RxBytes)+(c.TxBytes-p.TxBytes) >= activeBytes {
			out[id] = true
		}
	}
	return out
}

// publishedUnreachable is what goes into gossip: the first
// gossip.MaxUnreachable by ID (the wire form is bounded; the others are
// taken as direct by the peers that read it, while this peer's own routes
// use the whole set).
func publishedUnreachable(ids []peer.ID) []peer.ID {
	return ids[:min(len(ids), gossip.MaxUnreachable)]
}

// adjacencyLoop probes every peer the datapath routes to once a second
// (reading first the probes that came: prober.Probe), steps each link,
// and publishes and routes on a change of the set of unreachable peers.
func (d *Daemon) adjacencyLoop(ctx context.Context, pr *prober) error {
	defer pr.Close()
	t := time.NewTicker(probeEvery)
	defer t.Stop()
	var sent, probingSince time.Time
	// The WireGuard reading runs beside the loop: it may wait for a
	// WireGuard configuration under way (router.Stats), and the peers
	// judge our link by our hellos (probe.go), so the probes must not
	// wait for it.
	// One reading: the counters, and the links that carried traffic
	// since the reading before (activeLinks).
	type reading struct {
		stats  map[peer.ID]router.PeerStats
		active map[peer.ID]bool
	}
	var last atomic.Pointer[reading]
	last.Store(&reading{})
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		for {
			st := d.router.Stats()
			last.Store(&reading{stats: st, active: activeLinks(last.Load().stats, st)})
			select {
			case <-ctx.Done():
				return
			case <-time.After(statsEvery):
			}
		}
	})
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		r := last.Load()
		stats := r.stats
		d.mu.Lock()
		targets := maps.Clone(d.probeTargets)
		d.mu.Unlock()
		if now := time.Now(); now.Sub(sent) > 2*probeEvery {
			probingSince = now // we fell behind: the silence until now is ours
		}
		pr.Probe(targets, r.active)
		sent = time.Now()
		now := sent
		d.mu.Lock()
		if d.links == nil {
			d.links = map[peer.ID]linkState{}
		}
		next := make(map[peer.ID]linkState, len(targets))
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
			next[id] = stepLink(s, linkObs{LastReply: pr.LastReply(id), ProbingSince: since,
				WireGuard: haveStats && d.router.PeerTransport(id) == router.TransportWireGuard,
				Handshake: st.LastHandshake, Ticks: pr.Ticks(id)}, now)
			if next[id].Down != s.Down {
				d.log.Info("direct link", "peer", id, "down", next[id].Down)
			}
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
