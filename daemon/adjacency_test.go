package daemon

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/weftmesh/weft/api/client"
	"github.com/weftmesh/weft/peer"
)

// TestStepLink plays a link's history, one observation a second, and
// checks when it goes down and up again.
func TestStepLink(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	type step struct {
		stalled bool // this peer itself did not probe before this second (or the peer came back)
		reply   bool // a probe reply arrived this second
		wg      bool
		hs      int // handshake at this second (-1: none)
	}
	run := func(steps []step) []bool {
		s := newLink(t0)
		last, since := time.Time{}, time.Time{}
		var downs []bool
		for i, st := range steps {
			now := at(i + 1)
			if st.reply {
				last = now
			}
			hs := time.Time{}
			if st.hs >= 0 {
				hs = at(st.hs)
			}
			if st.stalled {
				since = now // kept, as the daemon keeps it
			}
			s = stepLink(s, linkObs{LastReply: last, ProbingSince: since, WireGuard: st.wg, Handshake: hs}, now)
			downs = append(downs, s.Down)
		}
		return downs
	}
	seq := func(parts ...any) []step { // (n int, reply bool) pairs
		var out []step
		for i := 0; i < len(parts); i += 2 {
			for range parts[i].(int) {
				out = append(out, step{reply: parts[i+1].(bool), hs: -1})
			}
		}
		return out
	}
	firstChange := func(downs []bool, from int) int {
		for i := from; i < len(downs); i++ {
			if downs[i] != downs[from] {
				return i
			}
		}
		return -1
	}
	tests := []struct {
		name  string
		steps []step
		check func(t *testing.T, downs []bool)
	}{
		{"healthy stays up", seq(30, true), func(t *testing.T, downs []bool) {
			if i := firstChange(downs, 0); i != -1 || downs[0] {
				t.Errorf("healthy link changed at %d: %v", i, downs)
			}
		}},
		{"never answers: down after 3 s", seq(10, false), func(t *testing.T, downs []bool) {
			if got := firstChange(downs, 0); got != 3 {
				t.Errorf("went down at step %d; want 3 (4 s after the start: more than downAfter of silence)", got)
			}
		}},
		{"two lost probes are not a failure", seq(5, true, 2, false, 20, true), func(t *testing.T, downs []bool) {
			if i := firstChange(downs, 0); i != -1 {
				t.Errorf("changed at %d: %v", i, downs)
			}
		}},
		{"blocked then healed: up after 10 s of answers", seq(5, true, 10, false, 30, true), func(t *testing.T, downs []bool) {
			down := firstChange(downs, 0)
			up := firstChange(downs, down)
			if down != 8 || up != 25 {
				t.Errorf("down at %d, up at %d; want 8 (3 s after the last answer at 5) and 25 (10 s after answers resume at 16)", down, up)
			}
		}},
		{"flapping: the third up waits 20 s", seq(5, true, 5, false, 12, true, 5, false, 40, true), func(t *testing.T, downs []bool) {
			d1 := firstChange(downs, 0)
			u1 := firstChange(downs, d1)
			d2 := firstChange(downs, u1)
			u2 := firstChange(downs, d2)
			if d1 != 8 || u1 != 20 || d2 != 25 || u2 != 47 {
				t.Errorf("transitions %d %d %d %d; want 8 20 25 47 (the second up needs 20 s of answers from 28)", d1, u1, d2, u2)
			}
		}},
		{"an answer in the middle of silence restarts the hold", seq(5, true, 5, false, 1, true, 5, false, 15, true), func(t *testing.T, downs []bool) {
			d := firstChange(downs, 0)
			u := firstChange(downs, d)
			if d != 8 || u != 26 {
				t.Errorf("down at %d, up at %d; want 8 and 26 (10 s after answers resume at 17)", d, u)
			}
		}},
		{"our own stall is not the peer's silence", func() []step {
			out := seq(5, true)
			for range 10 {
				out = append(out, step{stalled: true, hs: -1})
			}
			return append(out, seq(5, true)...)
		}(), func(t *testing.T, downs []bool) {
			if i := firstChange(downs, 0); i != -1 {
				t.Errorf("changed at %d: %v", i, downs)
			}
		}},
		{"wireguard: probes pass but no handshake for wgStale", func() []step {
			var out []step
			for range 260 {
				out = append(out, step{reply: true, wg: true, hs: 0})
			}
			return out
		}(), func(t *testing.T, downs []bool) {
			if got := firstChange(downs, 0); got != int(wgStale/time.Second) {
				t.Errorf("went down at %d; want %d", got, int(wgStale/time.Second))
			}
		}},
		{"wireguard: fresh handshakes keep it up", func() []step {
			var out []step
			for i := range 400 {
				out = append(out, step{reply: true, wg: true, hs: i - i%120})
			}
			return out
		}(), func(t *testing.T, downs []bool) {
			if i := firstChange(downs, 0); i != -1 {
				t.Errorf("changed at %d", i)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.check(t, run(tt.steps)) })
	}
}

func TestUnreachableSets(t *testing.T) {
	links := map[peer.ID]linkState{3: {Down: true}, 1: {Down: true}, 2: {}}
	if diff := cmp.Diff([]peer.ID{1, 3}, unreachable(links)); diff != "" {
		t.Errorf("unreachable (-want +got):\n%s", diff)
	}
	var many []peer.ID
	for i := range 40 {
		many = append(many, peer.ID(i+1))
	}
	if got := publishedUnreachable(many); len(got) != 24 || got[0] != 1 {
		t.Errorf("publishedUnreachable(40 IDs) = %v; want the first 24", got)
	}
}

// TestProber runs two probers on loopback: each answers the other.
func TestProber(t *testing.T) {
	a, err := newProber(1, "127.0.0.1", 0)
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(a.conn.LocalAddr().(*net.UDPAddr).Port)
	_ = a.conn.Close()
	a, err = newProber(1, "127.0.0.1", port)
	if err != nil {
		t.Fatal(err)
	}
	b, err := newProber(2, "127.0.0.2", port)
	if err != nil {
		t.Skipf("127.0.0.2 unavailable: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- a.Run(ctx) }()
	go func() { done <- b.Run(ctx) }()
	defer func() {
		cancel()
		for range 2 {
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	}()
	lo2 := netip.MustParseAddr("127.0.0.2")
	deadline := time.Now().Add(10 * time.Second)
	for a.LastReply(2).IsZero() {
		if time.Now().After(deadline) {
			t.Fatal("no reply from b within 10 s")
		}
		a.Probe(map[peer.ID]netip.Addr{2: lo2}, []peer.ID{2})
		time.Sleep(50 * time.Millisecond)
	}
	// Peer 2 moved: what it answered at its old address no longer
	// counts, nor do answers from there.
	a.Probe(map[peer.ID]netip.Addr{2: netip.MustParseAddr("127.0.0.3")}, nil)
	if got := a.LastReply(2); !got.IsZero() {
		t.Errorf("LastReply(2) = %v after peer 2 moved to an address that does not answer; want zero", got)
	}
}

func TestParseProbe(t *testing.T) {
	good := probeMsg{Kind: probeReq, From: 7, Seq: 9}.append(nil)
	if m, err := parseProbe(good); err != nil || m != (probeMsg{Kind: probeReq, From: 7, Seq: 9}) {
		t.Errorf("parseProbe(good) = %v, %v", m, err)
	}
	for name, b := range map[string][]byte{
		"short":     good[:20],
		"magic":     append([]byte("xxxx"), good[4:]...),
		"kind":      append(append([]byte{}, good[:4]...), append([]byte{3}, good[5:]...)...),
		"zero peer": probeMsg{Kind: probeReply}.append(nil),
	} {
		if _, err := parseProbe(b); !errors.Is(err, errBadProbe) {
			t.Errorf("parseProbe(%s) = %v; want errBadProbe", name, err)
		}
	}
}

func FuzzParseProbe(f *testing.F) {
	f.Add(probeMsg{Kind: probeReq, From: 7, Seq: 9}.append(nil))
	f.Add(probeMsg{Kind: probeReply, From: 1}.append(nil))
	f.Add([]byte("wfp1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseProbe(b)
		if err != nil {
			return
		}
		if again, err := parseProbe(m.append(nil)); err != nil || again != m {
			t.Fatalf("round trip: %v, %v", again, err)
		}
	})
}

func TestRelayProblems(t *testing.T) {
	st := &client.Status{Name: "h1", Peers: []client.Peer{
		{Name: "h1", Self: true},
		{Name: "h2"},
		{Name: "h3", Via: "h2", Reason: relayReason(true, "h2")},
		{Name: "h4", Reason: relayReason(true, "")},
		{Name: "h5", Reason: "unreachable since 2026-01-01T00:00:00Z (failure detector)"},
	}}
	want := []string{
		"h1 cannot reach h3 directly; relaying through h2",
		"h1 gets no answer from h4 on the direct path, and no relay is in use",
	}
	if diff := cmp.Diff(want, relayProblems(st)); diff != "" {
		t.Errorf("relayProblems (-want +got):\n%s", diff)
	}
	if got := relayReason(false, ""); got != "" {
		t.Errorf("relayReason(up, direct) = %q; want none", got)
	}
}

// TestStepTraffic checks which counter movements are traffic.
func TestStepTraffic(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	type move struct{ rx, tx int64 } // bytes in one second
	busyAfter := func(moves []move) (busy []bool) {
		s := newLink(t0)
		var rx, tx int64
		s = stepTraffic(s, linkObs{Counters: true}, t0)
		for i, m := range moves {
			rx, tx = rx+m.rx, tx+m.tx
			now := t0.Add(time.Duration(i+1) * time.Second)
			s = stepTraffic(s, linkObs{Counters: true, RxBytes: rx, TxBytes: tx}, now)
			busy = append(busy, now.Before(s.BusyUntil))
		}
		return busy
	}
	idle := func(n int) []move { return make([]move, n) }

	// Keepalives both ways every 25 s and a handshake every 2 min: idle.
	var keep []move
	for i := range 300 {
		m := move{}
		if i%25 == 0 {
			m = move{32, 32}
		}
		if i%120 == 7 {
			m = move{92, 148}
		}
		keep = append(keep, m)
	}
	if b := busyAfter(keep); slices.Contains(b, true) {
		t.Errorf("keepalives and handshakes made the link busy at second %d", slices.Index(b, true)+1)
	}
	// A ping a second (two 128-B WireGuard packets each way): busy within
	// 3 s, and for busyHold after it stops.
	ping := append(slices.Repeat([]move{{128, 128}}, 10), idle(60)...)
	b := busyAfter(ping)
	if first := slices.Index(b, true); first < 0 || first > 2 {
		t.Errorf("pings: first busy second %d, want ≤ 3", first+1)
	}
	last := -1
	for i, busy := range b {
		if busy {
			last = i
		}
	}
	if got, want := last+1, 10+int(busyHold/time.Second); got < want-1 || got > want+6 {
		t.Errorf("pings stopped at 10 s: busy until second %d, want about %d", got, want)
	}
	// The first packets into a broken link: sent, nothing back.
	if b := busyAfter(append(idle(5), move{0, 148})); !b[5] {
		t.Error("148 B sent with nothing received: not busy")
	}
	// A WireGuard peer made anew restarts its counters: no traffic.
	s := stepTraffic(newLink(t0), linkObs{Counters: true, RxBytes: 1 << 20, TxBytes: 1 << 20}, t0)
	s = stepTraffic(s, linkObs{Counters: true, RxBytes: 10, TxBytes: 10}, t0.Add(time.Second))
	if s.Load != 0 || t0.Add(time.Second).Before(s.BusyUntil) {
		t.Errorf("counters reset: load %v busy until %v", s.Load, s.BusyUntil)
	}
}

// TestProbeRate plays links second by second through stepLink and
// probeDue, as the adjacency loop does.
func TestProbeRate(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	type run struct {
		probes []int // seconds at which a probe was sent
		downAt int   // first second the link was down (-1: never)
	}
	// play runs secs seconds; answers(i) says whether the probe sent at
	// second i is answered (at once), traffic(i) the bytes each way in
	// sent in second i (received too while the link answers), wg whether the link is WireGuard with counters.
	play := func(secs int, wg bool, answers func(int) bool, traffic func(int) int64) run {
		s := newLink(t0)
		var last time.Time
		var rx, tx int64
		r := run{downAt: -1}
		for i := 1; i <= secs; i++ {
			now := t0.Add(time.Duration(i) * time.Second)
			b := traffic(i)
			tx += b
			if answers(i) {
				rx += b // a broken link brings nothing back
			}
			s = stepLink(s, linkObs{LastReply: last, WireGuard: wg, Counters: wg, RxBytes: rx, TxBytes: tx}, now)
			if s.Down && r.downAt < 0 {
				r.downAt = i
			}
			var due bool
			if s, due = probeDue(s, now); due {
				r.probes = append(r.probes, i)
				if answers(i) {
					last = now.Add(time.Millisecond)
				}
			}
		}
		return r
	}
	always := func(int) bool { return true }
	quiet := func(int) int64 { return 0 }
	count := func(ps []int, from, to int) (n int) {
		for _, p := range ps {
			if p >= from && p <= to {
				n++
			}
		}
		return n
	}

	// An idle WireGuard link: every second while just met, then every 5 s.
	r := play(120, true, always, quiet)
	if n := count(r.probes, 1, 10); n < 9 {
		t.Errorf("new idle link: %d probes in its first 10 s, want ≥ 9", n)
	}
	if n := count(r.probes, 60, 119); n != 12 {
		t.Errorf("idle link: %d probes in 60 s, want 12 (one per 5 s); probes %v", n, r.probes)
	}
	if r.downAt >= 0 {
		t.Errorf("idle answering link went down at %d s", r.downAt)
	}
	// VXLAN or direct (no counters): every second.
	if r := play(60, false, always, quiet); count(r.probes, 1, 60) != 60 {
		t.Errorf("link without counters: %d probes in 60 s, want 60", count(r.probes, 1, 60))
	}
	// An idle link that stops answering at 60 s: down once three slow
	// probes went unanswered (10-16 s), and probed every second from then.
	r = play(120, true, func(i int) bool { return i < 60 }, quiet)
	if r.downAt < 60+10 || r.downAt > 60+16 {
		t.Errorf("idle link silent from 60 s: down at %d s, want 70-76", r.downAt)
	}
	if r.downAt > 0 && count(r.probes, r.downAt+1, r.downAt+10) != 10 {
		t.Errorf("down link: %d probes in the 10 s after going down, want 10", count(r.probes, r.downAt+1, r.downAt+10))
	}
	// Broken while idle, traffic from 61 s: full rate at once, and down
	// 3-4 s after the traffic began, not at once for the silence before.
	r = play(120, true, func(i int) bool { return i < 58 }, func(i int) int64 {
		if i > 60 {
			return 200
		}
		return 0
	})
	if r.downAt < 61+3 || r.downAt > 61+4 {
		t.Errorf("traffic into a link silent since 58 s from 61 s: down at %d s, want 64-65", r.downAt)
	}
	// A busy link: every second, and for busyHold after its traffic stops
	// (and its byte sum decayed: 1,000 B/s takes ~17 s to fall below
	// busyBytes).
	r = play(150, true, always, func(i int) int64 {
		if i >= 30 && i < 60 {
			return 1000
		}
		return 0
	})
	if n := count(r.probes, 31, 59); n != 29 {
		t.Errorf("busy link: %d probes in 29 s, want 29", n)
	}
	if n := count(r.probes, 60, 60+int(busyHold/time.Second)-1); n != int(busyHold/time.Second) {
		t.Errorf("link idle for busyHold after traffic: %d probes, want %d", n, int(busyHold/time.Second))
	}
	if n := count(r.probes, 120, 149); n != 6 {
		t.Errorf("link idle again: %d probes in 30 s, want 6", n)
	}
}
