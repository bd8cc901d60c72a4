package daemon

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/weftmesh/weft/peer"
)

// TestReportSwitch: a report takes effect at its time, on the publisher
// and on a peer that learns it late alike.
func TestReportSwitch(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	sec := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	var r report
	r = r.observe([]peer.ID{7}, sec(2), sec(0))
	if got := r.effective(sec(1.999)); got != nil {
		t.Errorf("before its time: %v in effect; want none", got)
	}
	if got := r.effective(sec(2)); !slices.Equal(got, []peer.ID{7}) {
		t.Errorf("at its time: %v in effect; want [7]", got)
	}
	if took, at := r.step(sec(0), sec(1)); took || !at.Equal(sec(2)) {
		t.Errorf("step at 1 s = %v, %v; want not yet, pending at 2 s", took, at)
	}
	if again := r.observe([]peer.ID{7}, sec(2), sec(1)); !slices.Equal(again.prev, r.prev) || !again.at.Equal(r.at) {
		t.Errorf("the same publication seen again changed the report: %+v → %+v", r, again)
	}
	// Published late (its time passed) or without a time: at once.
	if got := r.observe([]peer.ID{8}, sec(3), sec(4)).effective(sec(4)); !slices.Equal(got, []peer.ID{8}) {
		t.Errorf("late publication: %v in effect; want [8]", got)
	}
	if got := r.observe([]peer.ID{9}, time.Time{}, sec(1)).effective(sec(1)); !slices.Equal(got, []peer.ID{9}) {
		t.Errorf("publication without a time: %v in effect; want [9]", got)
	}
	// Withdrawn before its time: never in effect.
	w := r.observe(nil, sec(3), sec(1))
	for _, s := range []float64{1, 2, 2.5, 3, 10} {
		if got := w.effective(sec(s)); got != nil {
			t.Errorf("withdrawn publication: %v in effect at %v s; want none", got, s)
		}
	}

	// The publisher and a peer that sees each publication late (less than
	// switchDelay) agree at every moment from the first arrival on. A new
	// set is published only once the last one took effect (adjacency.go).
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 200 {
		type pub struct {
			ids      []peer.ID
			when, at time.Time
			arr      time.Time // when the other peer sees it
			own      report    // the publisher's report from then on
		}
		var pubs []pub
		var own report
		now := t0
		for range 1 + rng.IntN(6) {
			now = now.Add(time.Duration(rng.IntN(3000)) * time.Millisecond)
			if now.Before(own.at) {
				now = own.at
			}
			var ids []peer.ID
			for id := range peer.ID(4) {
				if rng.IntN(2) == 0 {
					ids = append(ids, id+1)
				}
			}
			at := now.Add(switchDelay)
			own = own.observe(ids, at, now)
			arr := now.Add(time.Duration(rng.IntN(int(switchDelay/time.Millisecond))) * time.Millisecond)
			pubs = append(pubs, pub{ids: ids, when: now, at: at, arr: arr, own: own})
		}
		seen := map[peer.ID]report{}
		first := pubs[0].arr
		for ts := first; ts.Before(now.Add(2 * switchDelay)); ts = ts.Add(10 * time.Millisecond) {
			// The receiver's newest metadata at ts.
			var latest *pub
			var mine report
			for k := range pubs {
				if !pubs[k].arr.After(ts) {
					latest = &pubs[k]
				}
				if !pubs[k].when.After(ts) {
					mine = pubs[k].own
				}
			}
			if latest != nil {
				effectiveReports(seen, []peer.Info{{ID: 1, Meta: peer.Meta{Unreachable: latest.ids, UnreachableAt: latest.at}}}, 9, true, ts.Add(-10*time.Millisecond), ts)
			}
			if a, b := mine.effective(ts), seen[1].effective(ts); !slices.Equal(a, b) {
				t.Fatalf("trial %d at %v: publisher has %v in effect, receiver %v", trial, ts.Sub(t0), a, b)
			}
		}
	}

	// effectiveReports forgets peers that are gone and names the next time.
	reports := map[peer.ID]report{5: {cur: []peer.ID{1}}}
	eff := effectiveReports(reports, []peer.Info{
		{ID: 1, Meta: peer.Meta{Unreachable: []peer.ID{2}, UnreachableAt: sec(3)}},
		{ID: 2, Meta: peer.Meta{Unreachable: []peer.ID{1}, UnreachableAt: sec(2)}},
		{ID: 3}, // reports nothing
	}, 9, true, sec(0.5), sec(1))
	infos, took, next := eff.peers, eff.took, eff.next
	if took {
		t.Error("a switch reported before any report's time")
	}
	if _, ok := reports[5]; ok {
		t.Error("a peer no longer listed kept its report")
	}
	if _, ok := reports[3]; ok {
		t.Error("a peer that reports nothing has an entry (the zero report is the missing one)")
	}
	if !next.Equal(sec(2)) {
		t.Errorf("next switch %v; want 2 s", next.Sub(t0))
	}
	if infos[0].Meta.Unreachable != nil || infos[1].Meta.Unreachable != nil {
		t.Errorf("reports before their time: %v, %v in effect; want none", infos[0].Meta.Unreachable, infos[1].Meta.Unreachable)
	}
	if eff := effectiveReports(reports, infosOf(reports, sec(3), sec(2)), 9, true, sec(1), sec(2.5)); !eff.took || !eff.next.Equal(sec(3)) || eff.applied != 1 {
		t.Errorf("pass at 2.5 s after one at 1 s: switched %v, %d applied, next %v; want switched, 1 applied, next at 3 s", eff.took, eff.applied, eff.next.Sub(t0))
	}
}

// TestReportsThatMatter: a report between two other peers takes effect
// without a pass of its own (no switch, no wakeup) unless this peer is
// relaying; one that names this peer, before or after, always has one.
func TestReportsThatMatter(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	sec := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	const self = 9
	for _, tc := range []struct {
		name     string
		prev     []peer.ID // in effect before
		cur      []peer.ID // published, in effect from 2 s
		relaying bool
		matters  bool
	}{
		{"between others", nil, []peer.ID{2}, false, false},
		{"between others, healed", []peer.ID{2}, nil, false, false},
		{"between others, this peer relaying", nil, []peer.ID{2}, true, true},
		{"names this peer", nil, []peer.ID{2, self}, false, true},
		{"no longer names this peer", []peer.ID{self}, []peer.ID{2}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reports := map[peer.ID]report{}
			if tc.prev != nil {
				reports[1] = report{cur: tc.prev}
			}
			infos := []peer.Info{{ID: 1, Meta: peer.Meta{Unreachable: tc.cur, UnreachableAt: sec(2)}}}
			eff := effectiveReports(reports, infos, self, tc.relaying, sec(0), sec(1))
			if eff.took || eff.next.IsZero() != !tc.matters || eff.applied != 0 {
				t.Errorf("before its time: switched %v, %d applied, next %v; want no switch, none applied, a wakeup %v", eff.took, eff.applied, eff.next, tc.matters)
			}
			eff = effectiveReports(reports, infos, self, tc.relaying, sec(1), sec(2.5))
			if eff.took != tc.matters || !eff.next.IsZero() || eff.applied != 1 {
				t.Errorf("at its time: switched %v, %d applied, next %v; want switched %v, 1 applied, no wakeup", eff.took, eff.applied, eff.next, tc.matters)
			}
			// In effect all the same: the next pass's Set applies it.
			if got := eff.peers[0].Meta.Unreachable; !slices.Equal(got, tc.cur) {
				t.Errorf("in effect at 2.5 s: %v; want %v", got, tc.cur)
			}
		})
	}
}

// infosOf publishes again what each of peers 1 and 2 published, at1 and
// at2 its times.
func infosOf(reports map[peer.ID]report, at1, at2 time.Time) []peer.Info {
	return []peer.Info{
		{ID: 1, Meta: peer.Meta{Unreachable: reports[1].cur, UnreachableAt: at1}},
		{ID: 2, Meta: peer.Meta{Unreachable: reports[2].cur, UnreachableAt: at2}},
	}
}

func TestStep(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := report{cur: []peer.ID{1}, at: t0.Add(time.Second)}
	for _, tc := range []struct {
		since, now float64
		took       bool
		pending    bool
	}{{0, 0.5, false, true}, {0, 1, true, false}, {0.5, 2, true, false}, {1, 2, false, false}, {1.5, 3, false, false}} {
		s := t0.Add(time.Duration(tc.since * float64(time.Second)))
		n := t0.Add(time.Duration(tc.now * float64(time.Second)))
		took, at := r.step(s, n)
		if took != tc.took || at.IsZero() == tc.pending || (tc.pending && !at.Equal(r.at)) {
			t.Errorf("step(since %v s, now %v s) of a report at 1 s = %v, %v; want took %v, pending %v", tc.since, tc.now, took, at, tc.took, tc.pending)
		}
	}
	if got := earliest(time.Time{}, t0); !got.Equal(t0) {
		t.Errorf("earliest(none, t0) = %v", got)
	}
	if got := earliest(t0.Add(time.Second), t0); !got.Equal(t0) {
		t.Errorf("earliest(t0+1s, t0) = %v", got)
	}
	if got := earliest(t0, time.Time{}); !got.Equal(t0) {
		t.Errorf("earliest(t0, none) = %v", got)
	}
}
