package daemon

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/weftmesh/weft/api/client"
	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/peer"
	"github.com/weftmesh/weft/router"
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
	ticks := 1 // every how many seconds the link is probed
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
			s = stepLink(s, linkObs{LastReply: last, ProbingSince: since, WireGuard: st.wg, Handshake: hs, Ticks: ticks}, now)
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

	// A link probed every 2 s (past probeBudget peers) is given 6 s.
	ticks = 2
	t.Run("probed every 2 s: never answers, down after 6 s", func(t *testing.T) {
		if got := firstChange(run(seq(10, false)), 0); got != 6 {
			t.Errorf("went down at step %d; want 6 (7 s after the start)", got)
		}
	})
	t.Run("probed every 2 s: an answer every 2 s keeps it up", func(t *testing.T) {
		var steps []step
		for i := range 30 {
			steps = append(steps, step{reply: i%2 == 1, hs: -1})
		}
		if i := firstChange(run(steps), 0); i != -1 {
			t.Errorf("changed at %d", i)
		}
	})
	t.Run("probed every 2 s: three silent intervals are a failure", func(t *testing.T) {
		down := firstChange(run(seq(5, true, 10, false)), 0)
		if down != 11 {
			t.Errorf("went down at step %d; want 11 (6 s after the last answer at 5)", down)
		}
	})
}

// TestActiveLinks: a link carries traffic when its WireGuard counters grew
// by activeBytes between two readings; keepalives and handshakes on an
// idle link do not make it so, nor does a peer first seen or one whose
// counters went back (re-added).
func TestActiveLinks(t *testing.T) {
	st := func(rx, tx int64) router.PeerStats { return router.PeerStats{RxBytes: rx, TxBytes: tx} }
	prev := map[peer.ID]router.PeerStats{2: st(1000, 1000), 3: st(1000, 1000), 4: st(1000, 1000), 5: st(5000, 5000)}
	cur := map[peer.ID]router.PeerStats{
		2: st(1000+600, 1000+600), // 1,200 bytes both ways: traffic
		3: st(1000+32, 1000+32),   // a keepalive each way
		4: st(1000, 1000+activeBytes),
		5: st(10, 10),       // counters reset
		6: st(90000, 90000), // new
	}
	if diff := cmp.Diff(map[peer.ID]bool{2: true, 4: true}, activeLinks(prev, cur)); diff != "" {
		t.Errorf("activeLinks (-want +got):\n%s", diff)
	}
	if got := activeLinks(nil, cur); len(got) != 0 {
		t.Errorf("activeLinks of a first reading = %v; want none", got)
	}
}

// TestProbeTicks: a peer probes each link every round up to probeBudget
// links, and past that spreads them so that a round carries about
// probeBudget, up to maxProbeTicks rounds apart.
func TestProbeTicks(t *testing.T) {
	for _, tt := range []struct{ n, want int }{
		{0, 1}, {1, 1}, {39, 1}, {probeBudget, 1}, {probeBudget + 1, 2}, {99, 2},
		{100, 2}, {101, 3}, {499, 10}, {999, maxProbeTicks}, {4999, maxProbeTicks},
	} {
		if got := probeTicks(tt.n); got != tt.want {
			t.Errorf("probeTicks(%d) = %d; want %d", tt.n, got, tt.want)
		}
	}
}

// TestProberBudget: a peer with more links than probeBudget probes each
// once every probeTicks rounds, spread over them (a peer newly listed at
// once).
func TestProberBudget(t *testing.T) {
	a, _ := proberTo(t, "127.0.0.1") // a receiver that never reads
	const n = 2*probeBudget + 20
	k := probeTicks(n)
	if k != 3 {
		t.Fatalf("probeTicks(%d) = %d; the test wants 3", n, k)
	}
	targets := map[peer.ID]netip.Addr{}
	for id := range peer.ID(n) {
		targets[id+2] = netip.MustParseAddr("127.0.0.2")
	}
	round := func() int { // requests sent (none of them answers)
		_, r0 := a.Sent()
		a.Probe(targets, nil)
		_, r1 := a.Sent()
		return int(r1 - r0)
	}
	if got := round(); got != n {
		t.Errorf("first round sent %d requests; want %d (every peer newly listed)", got, n)
	}
	for range 3 { // any k rounds in a row probe each link once
		var rounds []int
		sum := 0
		for range k {
			c := round()
			rounds = append(rounds, c)
			sum += c
		}
		if sum != n || slices.Max(rounds) > n/k+n/4 {
			t.Errorf("%d rounds in a row sent %v requests; want %d in all, about %d each", k, rounds, n, n/k)
		}
	}
	// Links that carry traffic are probed every round; the budget spreads
	// the idle ones.
	active := map[peer.ID]bool{}
	for id := range peer.ID(probeBudget / 2) {
		active[id+2] = true
	}
	idle := n - len(active)
	ki := probeTicks(idle)
	a.Probe(targets, active) // the spread changes with the idle count: settle
	for range 2 {
		var rounds []int
		sum := 0
		for range ki {
			_, r0 := a.Sent()
			a.Probe(targets, active)
			_, r1 := a.Sent()
			rounds = append(rounds, int(r1-r0))
			sum += int(r1 - r0)
		}
		if sum != idle+ki*len(active) || slices.Min(rounds) < len(active) {
			t.Errorf("%d rounds with %d active links sent %v requests; want %d in all, %d active ones each round", ki, len(active), rounds, idle+ki*len(active), len(active))
		}
	}
	a.mu.Lock()
	own, link := a.ownTicksLocked(2), a.linkTicksLocked(2)
	a.mu.Unlock()
	if own != 1 || link != 1 {
		t.Errorf("an active link probed every %d rounds, given %d; want 1 and 1 (its peer sent nothing)", own, link)
	}

	// Past maxProbeTicks·probeBudget links, the rounds carry more.
	if got := probeTicks(2 * maxProbeTicks * probeBudget); got != maxProbeTicks {
		t.Errorf("probeTicks(%d) = %d; want %d", 2*maxProbeTicks*probeBudget, got, maxProbeTicks)
	}
}

// TestHeardSteps: every how many rounds a peer probes us is read from
// the round numbers of its packets, the smaller of the last two steps: a
// lost packet or a break does not stretch it, two steps of k in a row
// do, and a restart (a new random start) says nothing.
func TestHeardSteps(t *testing.T) {
	p := &prober{heard: map[peer.ID]uint64{}, ticks: map[peer.ID]int{}, steps: map[peer.ID]int{}, every: 1}
	for _, tc := range []struct {
		seq  uint64
		want int
	}{
		{100, 1}, {101, 1}, {101, 1}, // a request and a hello of one round
		{103, 1},           // a lost packet
		{104, 1}, {114, 1}, // a 10-round break
		{115, 1}, {118, 1}, {121, 3}, {124, 3}, // the peer went to every 3 rounds
		{126, 2}, {127, 1}, // and back
		{1 << 40, 1}, {5, 1}, // restarts: new random starts
	} {
		p.heardLocked(2, tc.seq)
		if got := max(p.ticks[2], 1); got != tc.want {
			t.Fatalf("after round %d: %d rounds; want %d", tc.seq, got, tc.want)
		}
	}
}

// TestProberLinkTicks: a peer with few links probes every round a peer
// that probes it every probeTicks rounds; each end gives the link the
// slower end's interval (read by the fast end from the slow end's round
// numbers), and hellos keep both ends' evidence moving.
func TestProberLinkTicks(t *testing.T) {
	a, b, lo2 := probePair(t)
	lo1 := netip.MustParseAddr("127.0.0.1")
	ta := map[peer.ID]netip.Addr{2: lo2}
	for id := range peer.ID(2 * probeBudget) { // a has 101 links: every 3rd round
		ta[id+100] = netip.MustParseAddr("127.0.0.3") // nobody there
	}
	tb := map[peer.ID]netip.Addr{1: lo1}
	k := probeTicks(len(ta))
	testutil.Eventually(t, 20*time.Second, "both ends to give the link a's interval", func() error {
		for range k {
			a.Probe(ta, nil)
			b.Probe(tb, nil)
			time.Sleep(5 * time.Millisecond)
		}
		if ga, gb := a.Ticks(2), b.Ticks(1); ga != k || gb != k {
			return fmt.Errorf("a.Ticks(b) = %d, b.Ticks(a) = %d; want %d", ga, gb, k)
		}
		return nil
	})
	ra, rb := a.LastReply(2), b.LastReply(1)
	testutil.Eventually(t, 20*time.Second, "evidence to move at both ends", func() error {
		for range k {
			a.Probe(ta, nil)
			b.Probe(tb, nil)
			time.Sleep(5 * time.Millisecond)
		}
		if !a.LastReply(2).After(ra) || !b.LastReply(1).After(rb) {
			return fmt.Errorf("LastReply a→b %v (was %v), b→a %v (was %v)", a.LastReply(2), ra, b.LastReply(1), rb)
		}
		return nil
	})
	if h, _ := a.Sent(); h == 0 {
		t.Errorf("a sent no hellos")
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
	a, b, lo2 := probePair(t)
	answering(t, b)
	deadline := time.Now().Add(10 * time.Second)
	for a.LastReply(2).IsZero() {
		if time.Now().After(deadline) {
			t.Fatal("no reply from b within 10 s")
		}
		a.Probe(map[peer.ID]netip.Addr{2: lo2}, nil)
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
	hello := probeMsg{Kind: probeHello, From: 7, Seq: 9, Echo: 11}
	if b := hello.append(nil); len(b) != helloLen {
		t.Errorf("hello of %d bytes; want %d", len(b), helloLen)
	} else if m, err := parseProbe(b); err != nil || m != hello {
		t.Errorf("parseProbe(hello) = %v, %v", m, err)
	}
	for name, b := range map[string][]byte{
		"short":            good[:20],
		"magic":            append([]byte("xxxx"), good[4:]...),
		"kind":             append(append([]byte{}, good[:4]...), append([]byte{4}, good[5:]...)...),
		"zero peer":        probeMsg{Kind: probeReply}.append(nil),
		"short hello":      hello.append(nil)[:probeLen],
		"long request":     append(append([]byte{}, good...), 0, 0, 0, 0, 0, 0, 0, 0),
		"hello, zero peer": probeMsg{Kind: probeHello, Seq: 1}.append(nil),
	} {
		if _, err := parseProbe(b); !errors.Is(err, errBadProbe) {
			t.Errorf("parseProbe(%s) = %v; want errBadProbe", name, err)
		}
	}
}

func FuzzParseProbe(f *testing.F) {
	f.Add(probeMsg{Kind: probeReq, From: 7, Seq: 9}.append(nil))
	f.Add(probeMsg{Kind: probeReply, From: 1}.append(nil))
	f.Add(probeMsg{Kind: probeHello, From: 1, Seq: 2, Echo: 3}.append(nil))
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

// probePair is two probers on loopback addresses, on one port, for
// rounds about every 20 ms (period: what a hello's echo is worth).
func probePair(t *testing.T) (a, b *prober, bAddr netip.Addr) {
	const period = 30 * time.Millisecond
	t.Helper()
	x, err := newProber(1, "127.0.0.1", 0, probeEvery)
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(x.conn.LocalAddr().Port())
	_ = x.conn.Close()
	a, err = newProber(1, "127.0.0.1", port, period)
	if err != nil {
		t.Fatal(err)
	}
	b, err = newProber(2, "127.0.0.2", port, period)
	if err != nil {
		a.conn.Close()
		t.Skipf("127.0.0.2 unavailable: %v", err)
	}
	t.Cleanup(func() {
		a.Close()
		b.Close()
	})
	return a, b, netip.MustParseAddr("127.0.0.2")
}

// answering runs p's rounds to no one every period until the test ends,
// as the adjacency loop of a peer that probes no one: it reads what came
// and answers the requests.
func answering(t *testing.T, p *prober) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(p.period)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				p.Probe(nil, nil)
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// TestProberHellos: two peers of this version move from requests to
// hellos within a few rounds, and the hellos alone keep both links
// answered; a hello whose echo stops moving (our packets no longer reach
// the peer) does not.
func TestProberHellos(t *testing.T) {
	a, b, lo2 := probePair(t)
	lo1 := netip.MustParseAddr("127.0.0.1")
	ta, tb := map[peer.ID]netip.Addr{2: lo2}, map[peer.ID]netip.Addr{1: lo1}
	count := (*prober).Sent
	// Rounds until both have sent 5 hellos in a row and no request.
	deadline := time.Now().Add(20 * time.Second)
	var ha0, ra0, hb0, rb0 uint64
	settled := false
	for !settled {
		if time.Now().After(deadline) {
			ha, ra := count(a)
			hb, rb := count(b)
			t.Fatalf("not settled on hellos in 20 s: a sent %d hellos %d requests, b %d and %d", ha, ra, hb, rb)
		}
		ha0, ra0 = count(a)
		hb0, rb0 = count(b)
		for range 5 {
			a.Probe(ta, nil)
			b.Probe(tb, nil)
			time.Sleep(20 * time.Millisecond)
		}
		ha, ra := count(a)
		hb, rb := count(b)
		settled = ha-ha0 == 5 && hb-hb0 == 5 && ra == ra0 && rb == rb0
	}
	// On hellos alone, each round is answered.
	before := a.LastReply(2)
	testutil.Eventually(t, 10*time.Second, "a hello to answer a's round", func() error {
		a.Probe(ta, nil)
		b.Probe(tb, nil)
		if !a.LastReply(2).After(before) || b.LastReply(1).IsZero() {
			return fmt.Errorf("LastReply a→b %v (before %v), b→a %v", a.LastReply(2), before, b.LastReply(1))
		}
		return nil
	})
	if _, ra := count(a); ra != ra0 {
		t.Errorf("a sent %d requests to a peer that speaks hellos", ra-ra0)
	}

	// b stops taking a's packets (it expects a elsewhere now) but goes on
	// sending hellos to a: their echo is stuck at the last round b took,
	// and a's evidence of b stops at that round's send time plus one
	// period (probePair's, so that the rounds below outlast it).
	b.mu.Lock()
	b.addrs[1] = b.probedAt(netip.MustParseAddr("127.0.0.3"))
	b.mu.Unlock()
	time.Sleep(50 * time.Millisecond) // packets in flight land
	b.mu.Lock()
	stuck := b.heard[1]
	b.mu.Unlock()
	a.mu.Lock()
	sentAt, ok := a.sentAtLocked(stuck)
	a.mu.Unlock()
	if !ok {
		t.Fatalf("a does not remember its round %d that b took last", stuck)
	}
	for range 10 {
		a.Probe(ta, nil)
		b.mu.Lock()
		b.seq++
		msg := probeMsg{Kind: probeHello, From: 2, Seq: b.seq, Echo: b.heard[1]}.append(nil)
		b.mu.Unlock()
		if err := b.conn.WriteTo(msg, netip.AddrPortFrom(lo1, b.port)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	a.mu.Lock()
	gotHello := a.hellos[2]
	a.mu.Unlock()
	if !gotHello.After(sentAt.Add(100 * time.Millisecond)) {
		t.Fatalf("a got no hello from b after the break (last %v)", gotHello)
	}
	if got := a.LastReply(2); got.After(sentAt.Add(30 * time.Millisecond)) {
		t.Errorf("a's evidence of b moved to %v on hellos with a stuck echo (round sent at %v)", got, sentAt)
	}
}

// TestProberLearnsHellos: a peer learns from a marked reply that the
// other speaks hellos, and keeps that through the other's requests while
// the other has not learned it yet (rounds in step: the other's request
// comes after its reply); a peer whose hellos stopped and that sends
// requests again is put back on requests.
func TestProberLearnsHellos(t *testing.T) {
	a, err := newProber(1, "127.0.0.1", 0, probeEvery)
	if err != nil {
		t.Fatal(err)
	}
	defer a.conn.Close()
	lo2 := netip.MustParseAddr("127.0.0.2")
	a.addrs[2] = a.probedAt(lo2)
	t0 := time.Now()
	a.receive(probeMsg{Kind: probeReply, From: 2, Seq: 5 | helloBit}, lo2, t0)
	a.receive(probeMsg{Kind: probeReq, From: 2, Seq: 9}, lo2, t0.Add(time.Millisecond))
	if a.speaks[2].IsZero() {
		t.Fatal("a forgot that 2 speaks hellos on its request, before 2 ever sent a hello")
	}
	a.receive(probeMsg{Kind: probeHello, From: 2, Seq: 10, Echo: 1}, lo2, t0.Add(time.Second))
	a.receive(probeMsg{Kind: probeReq, From: 2, Seq: 11}, lo2, t0.Add(2*time.Second))
	if a.speaks[2].IsZero() {
		t.Fatal("a request 1 s after a hello put 2 back on requests")
	}
	a.receive(probeMsg{Kind: probeReq, From: 2, Seq: 12}, lo2, t0.Add(time.Second+helloQuiet+time.Millisecond))
	if !a.speaks[2].IsZero() {
		t.Fatal("2 sends requests, its hellos stopped: still taken to speak hellos")
	}
}

// TestProberPeerNotProbing: a peer that speaks hellos but does not probe
// us (we are not among its targets yet: it just started) sends no hellos;
// our requests, which it answers, keep the link answered.
func TestProberPeerNotProbing(t *testing.T) {
	a, b, lo2 := probePair(t)
	answering(t, b) // b never probes
	ta := map[peer.ID]netip.Addr{2: lo2}
	for round := range 10 {
		before := a.LastReply(2)
		a.Probe(ta, nil)
		testutil.Eventually(t, 10*time.Second, fmt.Sprintf("an answer to round %d", round), func() error {
			a.drain() // what a's next round would read first
			if !a.LastReply(2).After(before) {
				return errors.New("no answer")
			}
			return nil
		})
	}
	hellos, requests := a.Sent()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.speaks[2].IsZero() || hellos == 0 {
		t.Errorf("a did not learn from b's replies that b speaks hellos (sent %d hellos)", hellos)
	}
	if requests != 10 {
		t.Errorf("a sent %d requests in 10 rounds to a peer that sends no hellos; want 10", requests)
	}
}

// oldResponder is a prober of an older version at addr:port: it answers
// requests with plain replies, sends requests, and drops what it does not
// parse (hellos are longer than its packets).
func oldResponder(t *testing.T, addr netip.Addr, port uint16, self peer.ID) (*net.UDPConn, *atomic.Int64) {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, port)))
	if err != nil {
		t.Skipf("%v unavailable: %v", addr, err)
	}
	var dropped atomic.Int64
	go func() {
		buf := make([]byte, 64)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			b := buf[:n]
			if n != probeLen || string(b[:4]) != probeMagic || (b[4] != probeReq && b[4] != probeReply) {
				dropped.Add(1)
				continue
			}
			if b[4] == probeReq {
				out := probeMsg{Kind: probeReply, From: self, Seq: binary.BigEndian.Uint64(b[13:])}.append(nil)
				_, _ = c.WriteToUDPAddrPort(out, from)
			}
		}
	}()
	t.Cleanup(func() { c.Close() })
	return c, &dropped
}

// TestProberOldPeer: a peer of an older version is probed with requests,
// never hellos, and its replies keep the link answered; a peer that goes
// back to an older version (its requests come, its hellos stop) is put
// back on requests.
func TestProberOldPeer(t *testing.T) {
	a, b, lo2 := probePair(t)
	port := b.port
	ta := map[peer.ID]netip.Addr{2: lo2}
	// Settle a and b on hellos.
	testutil.Eventually(t, 20*time.Second, "a to speak hellos to b", func() error {
		a.Probe(ta, nil)
		b.Probe(map[peer.ID]netip.Addr{1: netip.MustParseAddr("127.0.0.1")}, nil)
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.hellos[2].IsZero() || a.speaks[2].IsZero() {
			return errors.New("no hello from b yet")
		}
		return nil
	})
	// b goes back to an older version at the same address.
	b.Close()
	a.drain() // b's last hellos
	old, dropped := oldResponder(t, lo2, port, 2)
	// Its first request puts it back on requests, once its hellos have
	// been quiet for helloQuiet (forced here).
	a.mu.Lock()
	a.hellos[2] = time.Now().Add(-helloQuiet - time.Second)
	a.mu.Unlock()
	req := probeMsg{Kind: probeReq, From: 2, Seq: 5}.append(nil)
	if _, err := old.WriteToUDPAddrPort(req, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "a to probe the old peer with requests, answered", func() error {
		before := a.LastReply(2)
		h0, _ := a.Sent()
		a.Probe(ta, nil)
		time.Sleep(20 * time.Millisecond)
		a.drain()
		h1, _ := a.Sent()
		if h1 != h0 {
			return errors.New("a still sends hellos")
		}
		if !a.LastReply(2).After(before) {
			return errors.New("no reply from the old peer")
		}
		return nil
	})
	n := dropped.Load()
	for range 3 {
		a.Probe(ta, nil)
	}
	time.Sleep(50 * time.Millisecond)
	if d := dropped.Load() - n; d != 0 {
		t.Errorf("the old peer dropped %d packets from a on requests", d)
	}
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

// BenchmarkProbeRound: one round of this peer's probes to 39 peers of a
// 40-peer mesh (all speak hellos; one receiver on 127.0.0.2 that never
// reads), per op.
func BenchmarkProbeRound(b *testing.B) {
	a, _ := proberTo(b, "") // dual-stack, as weft binds by default
	targets := map[peer.ID]netip.Addr{}
	now := time.Now().Add(time.Hour) // hellos fresh all along
	for id := peer.ID(2); id <= 40; id++ {
		targets[id] = netip.MustParseAddr("127.0.0.2")
		a.speaks[id], a.hellos[id] = now, now
	}
	b.ReportAllocs()
	for b.Loop() {
		a.Probe(targets, nil)
	}
	if h, r := a.Sent(); h == 0 || r != 0 {
		b.Fatalf("sent %d hellos, %d requests; want hellos only", h, r)
	}
}

// TestProbeRoundSkipsFailedPacket: a round's packets go out in batches; a
// packet the kernel refuses (here an IPv6 peer on an IPv4 socket) is
// skipped and the rest of the round still goes, wherever it falls.
func TestProbeRoundSkipsFailedPacket(t *testing.T) {
	a, rx := proberTo(t, "127.0.0.1") // an IPv4 socket
	targets := map[peer.ID]netip.Addr{
		2: netip.MustParseAddr("::1"), 3: netip.MustParseAddr("127.0.0.2"),
		4: netip.MustParseAddr("::2"), 5: netip.MustParseAddr("127.0.0.2"),
	}
	buf := make([]byte, 64)
	for round := range 10 { // the round's order follows the map's
		a.Probe(targets, nil)
		for range 2 { // peers 3 and 5
			if err := rx.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
				t.Fatal(err)
			}
			n, _, err := rx.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			if m, err := parseProbe(buf[:n]); err != nil || m.Kind != probeReq || m.From != 1 {
				t.Fatalf("round %d: got %+v, %v; want a request from 1", round, m, err)
			}
		}
	}
}

// proberTo is a prober bound to host (any port) whose probes go to a
// receiver on 127.0.0.2 that reads only what the test reads, and that
// receiver.
func proberTo(tb testing.TB, host string) (*prober, *net.UDPConn) {
	tb.Helper()
	rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		tb.Skipf("127.0.0.2 unavailable: %v", err)
	}
	tb.Cleanup(func() { rx.Close() })
	a, err := newProber(1, host, 0, probeEvery)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { a.conn.Close() })
	a.port = uint16(rx.LocalAddr().(*net.UDPAddr).Port)
	return a, rx
}

// TestProberReadsInBatches: a round first takes what waits in the socket,
// in reads of up to probeBatch packets, so the hellos of a whole period
// cost a read or two, not a wakeup each; requests beyond one read's batch
// are all answered.
func TestProberReadsInBatches(t *testing.T) {
	a, b, lo2 := probePair(t)
	to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), a.port)
	targets := map[peer.ID]netip.Addr{2: lo2}
	a.Probe(targets, nil)
	// 100 hellos over 100 ms: all wait for a's next round.
	for seq := range uint64(100) {
		msg := probeMsg{Kind: probeHello, From: 2, Seq: seq + 1}.append(nil)
		if err := b.conn.WriteTo(msg, to); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // the last ones land
	a.mu.Lock()
	early := a.heard[2]
	a.mu.Unlock()
	if early != 0 {
		t.Errorf("a took hello %d before its round", early)
	}
	packets0, reads0 := a.Received()
	a.Probe(targets, nil)
	packets, reads := a.Received()
	a.mu.Lock()
	heard := a.heard[2]
	a.mu.Unlock()
	if heard != 100 || packets-packets0 != 100 {
		t.Fatalf("a's round took %d packets, the newest hello %d; want all 100", packets-packets0, heard)
	}
	if reads-reads0 != 2 {
		t.Errorf("a took 100 hellos in %d reads; want 2 (%d a read)", reads-reads0, probeBatch)
	}

	// A burst of requests, more than a read takes, is answered whole at
	// the next round.
	rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Skipf("127.0.0.2 unavailable: %v", err)
	}
	defer rx.Close()
	const burst = 3 * probeBatch
	for seq := range uint64(burst) {
		if _, err := rx.WriteToUDPAddrPort(probeMsg{Kind: probeReq, From: 9, Seq: seq}.append(nil), to); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond)
	a.Probe(nil, nil)
	got := map[uint64]bool{}
	buf := make([]byte, 64)
	for len(got) < burst {
		if err := rx.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
			t.Fatal(err)
		}
		n, _, err := rx.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("%d of %d requests answered: %v", len(got), burst, err)
		}
		m, err := parseProbe(buf[:n])
		if err != nil || m.Kind != probeReply || m.From != 1 || m.Seq&helloBit == 0 {
			t.Fatalf("got %+v, %v; want a marked reply from 1", m, err)
		}
		got[m.Seq&^helloBit] = true
	}
}
