package daemon

// Route switches at one moment on both ends. Whether the link between two
// peers is relayed is decided from both their reports (router/paths.go:
// relayed only while both ends report it broken). Each end learns the
// other's report by gossip, some hundreds of milliseconds after it was
// published; an end that acted on a report as soon as it knew it would,
// for that while, send directly while the other sent through a relay, and
// WireGuard drops what arrives from a peer its AllowedIPs do not route the
// source to (the soak lost 0.3 s of pings so as a link came back, with both
// ends alive). So a report takes effect at a time its publisher sets,
// switchDelay after publishing (peer.Meta.UnreachableAt), on every peer
// alike, the publisher included: with clocks in step (NTP), both ends
// switch within milliseconds of each other. A peer publishes a new set only
// once its last one has taken effect, so every peer has seen the set a
// publication replaces in effect (gossip may skip an intermediate
// metadata version, but not one that is switchDelay old). A report that
// arrives after its time (gossip slower than switchDelay, or a clock
// ahead) takes effect at once, as it did before; so does one without a
// time.

import (
	"slices"
	"time"

	"github.com/weftmesh/weft/peer"
)

// switchDelay is how long after publishing a report takes effect: longer
// than gossip takes to carry a metadata change across the mesh (well under
// a second at 40 peers, ~1.5 s at 1,000 in the simulator).
const switchDelay = 2 * time.Second

// report is one peer's published unreachable set as it takes effect: prev
// until at, cur from then on.
type report struct {
	prev, cur []peer.ID
	at        time.Time
}

// effective is the set in effect at now.
func (r report) effective(now time.Time) []peer.ID {
	if now.Before(r.at) {
		return r.prev
	}
	return r.cur
}

// observe takes a newly seen publication of ids, effective at at (zero:
// at once): what is in effect now stays in effect until then.
func (r report) observe(ids []peer.ID, at, now time.Time) report {
	if slices.Equal(ids, r.cur) && at.Equal(r.at) {
		return r
	}
	return report{prev: r.effective(now), cur: slices.Clone(ids), at: at}
}

// step says, for a pass at now whose previous pass was at since, whether
// r took effect in between (since, now], and when it still has to
// (zero: it has).
func (r report) step(since, now time.Time) (took bool, pending time.Time) {
	if now.Before(r.at) {
		return false, r.at
	}
	return r.at.After(since), time.Time{}
}

// effectiveReports replaces each peer's published unreachable set by the
// one in effect at now, and keeps what it saw of each in reports. It
// returns (reportsNow) whether one that matters to self took effect since
// the previous pass (at since), how many took effect, and the next time
// one that matters does (zero: none). Peers not listed are forgotten.
//
// A report matters to self at once only if it names self (before or
// after: a link of ours), or if self is relaying (its own report names
// someone, relaying is true): self's next hops are all direct unless one
// of its own links is broken by both ends' reports (router/paths.go), and a
// relay forwards what it receives by its ordinary routes, so a change to a
// link between two other peers changes nothing in self's datapath. Such a
// report is still applied, by the next pass, through the debounced Set;
// what it is not given is the immediate pass at its time (switchAt, and
// SetNow in sync). One broken link in a mesh of N peers had all N
// reconcile at once; now its two ends and the peers relaying do. (It does
// not thin an overloaded start: a starved peer reports all its links down,
// naming every peer.)
func effectiveReports(reports map[peer.ID]report, peers []peer.Info, self peer.ID, relaying bool, since, now time.Time) reportsNow {
	var res reportsNow
	res.peers = make([]peer.Info, len(peers))
	for i, p := range peers {
		r := reports[p.ID].observe(p.Meta.Unreachable, p.Meta.UnreachableAt, now)
		if r.none() {
			delete(reports, p.ID) // the zero report: most peers, most of the time
		} else {
			reports[p.ID] = r
		}
		p.Meta.Unreachable = r.effective(now)
		res.peers[i] = p
		t, at := r.step(since, now)
		if t {
			res.applied++
		}
		if !relaying && !r.names(self) {
			continue
		}
		res.took = res.took || t
		res.next = earliest(res.next, at)
	}
	if len(reports) > 0 {
		listed := make(map[peer.ID]bool, len(peers))
		for _, p := range peers {
			listed[p.ID] = true
		}
		for id := range reports {
			if !listed[id] {
				delete(reports, id)
			}
		}
	}
	return res
}

// reportsNow is what effectiveReports found.
type reportsNow struct {
	peers   []peer.Info // each with the set in effect now
	took    bool        // one that matters to self took effect since the last pass
	applied int         // reports that took effect since the last pass, whether they matter or not
	next    time.Time   // when one that matters takes effect next (zero: none)
}

// names reports whether id is in r's set in effect before or after its time.
func (r report) names(id peer.ID) bool {
	return slices.Contains(r.prev, id) || slices.Contains(r.cur, id)
}

// none reports whether r is the zero report (nothing reported, ever or
// since long enough): a missing map entry stands for it.
func (r report) none() bool { return r.empty() && r.at.IsZero() }

// empty reports whether r names no peer, before or after its time: for our
// own report, that this peer relays nothing (effectiveReports).
func (r report) empty() bool { return len(r.prev) == 0 && len(r.cur) == 0 }

// earliest is the earlier of two times, zero meaning none.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// switchAt has the sync loop run a pass at t (zero: none), without
// waiting for its gap: the other end of the link switches then too. One
// wakeup is pending at a time, the earliest; the pass it runs schedules
// the next.
func (d *Daemon) switchAt(t time.Time) {
	if t.IsZero() {
		return
	}
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.switchWhen.After(now) && !d.switchWhen.After(t) {
		return
	}
	if d.switchTimer != nil {
		d.switchTimer.Stop()
	}
	d.switchWhen = t
	d.switchTimer = time.AfterFunc(t.Sub(now), func() {
		select {
		case d.switchKick <- struct{}{}:
		default:
		}
	})
}
