package daemon

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/weftmesh/weft/api"
	"github.com/weftmesh/weft/ipam"
	"github.com/weftmesh/weft/peer"
	"github.com/weftmesh/weft/router"
)

func peerAt(name, addr string, st peer.State, joined bool) peer.Info {
	p := peer.Info{Name: name, State: st, Meta: peer.Meta{Joined: joined}}
	if addr != "" {
		p.Addr = netip.MustParseAddr(addr)
	}
	return p
}

func TestReachedTarget(t *testing.T) {
	h2 := peerAt("h2", "192.168.1.2", peer.Alive, true)
	tests := []struct {
		name    string
		others  []peer.Info
		targets []string
		want    bool
	}{
		{"no targets", []peer.Info{h2}, nil, false},
		{"by address", []peer.Info{h2}, []string{"192.168.1.2"}, true},
		{"by address and port", []peer.Info{h2}, []string{"192.168.1.2:6783"}, true},
		{"by name", []peer.Info{h2}, []string{"h2"}, true},
		{"another host", []peer.Info{h2}, []string{"192.168.1.3"}, false},
		{"target known but dead", []peer.Info{peerAt("h2", "192.168.1.2", peer.Dead, true)}, []string{"h2"}, false},
		{"target stopped", []peer.Info{peerAt("h2", "192.168.1.2", peer.Stopped, true)}, []string{"h2"}, false},
		{"no peers", nil, []string{"h2"}, false},
	}
	for _, tt := range tests {
		if got := reachedTarget(tt.others, tt.targets); got != tt.want {
			t.Errorf("%s: reachedTarget(%v) = %v; want %v", tt.name, tt.targets, got, tt.want)
		}
	}
}

func TestAllJoined(t *testing.T) {
	tests := []struct {
		name  string
		peers []peer.Info
		want  bool
	}{
		{"alone", []peer.Info{peerAt("h1", "", peer.Alive, true)}, true},
		{"all joined", []peer.Info{peerAt("h1", "", peer.Alive, true), peerAt("h2", "", peer.Alive, true)}, true},
		{"self not yet", []peer.Info{peerAt("h1", "", peer.Alive, false), peerAt("h2", "", peer.Alive, true)}, false},
		{"an alive peer not yet", []peer.Info{peerAt("h1", "", peer.Alive, true), peerAt("h2", "", peer.Alive, false)}, false},
		{"a dead peer never counts", []peer.Info{peerAt("h1", "", peer.Alive, true), peerAt("h2", "", peer.Dead, false)}, true},
	}
	for _, tt := range tests {
		if got := allJoined(tt.peers); got != tt.want {
			t.Errorf("%s: allJoined = %v; want %v", tt.name, got, tt.want)
		}
	}
}

func TestInRestartGrace(t *testing.T) {
	self := peerAt("h1", "", peer.Alive, true)
	tests := []struct {
		name        string
		up          time.Duration
		haveTargets bool
		peers       []peer.Info
		want        bool
	}{
		{"just restarted, nobody found yet", time.Second, true, []peer.Info{self}, true},
		{"just restarted, others known but dead", time.Second, true, []peer.Info{self, peerAt("h2", "", peer.Dead, true)}, true},
		{"found one alive", time.Second, true, []peer.Info{self, peerAt("h2", "", peer.Alive, true)}, false},
		{"grace over", 6 * time.Second, true, []peer.Info{self}, false},
		{"first peer of a mesh: nothing to wait for", time.Second, false, []peer.Info{self}, false},
		{"no peers at all", time.Second, true, nil, true},
	}
	for _, tt := range tests {
		if got := inRestartGrace(tt.up, tt.haveTargets, tt.peers); got != tt.want {
			t.Errorf("%s: inRestartGrace = %v; want %v", tt.name, got, tt.want)
		}
	}
}

func TestMapIPAMError(t *testing.T) {
	tests := []struct {
		in   error
		want error // nil: passed through unchanged
	}{
		{fmt.Errorf("allocate: %w", ipam.ErrNoSpace), api.ErrUnavailable},
		{fmt.Errorf("allocate: %w", context.DeadlineExceeded), api.ErrUnavailable},
		{fmt.Errorf("allocate: %w", context.Canceled), api.ErrUnavailable},
		{fmt.Errorf("reclaim: %w", ipam.ErrPeerAlive), api.ErrConflict},
		{fmt.Errorf("reclaim: %w", ipam.ErrReclaimedByOther), api.ErrConflict},
		{fmt.Errorf("reclaim: %w", ipam.ErrNoQuorum), api.ErrUnavailable},
		{fmt.Errorf("reclaim: %w", ipam.ErrNothingToReclaim), api.ErrNotFound},
		{errors.New("disk on fire"), nil},
	}
	for _, tt := range tests {
		got := mapIPAMError(tt.in)
		switch {
		case tt.want == nil && got != tt.in:
			t.Errorf("mapIPAMError(%v) = %v; want it unchanged", tt.in, got)
		case tt.want != nil && !errors.Is(got, tt.want):
			t.Errorf("mapIPAMError(%v) = %v; want %v", tt.in, got, tt.want)
		}
	}
}

// One status answer agrees with itself: an owner's reachability follows
// the membership snapshot the answer lists, not the allocator's view from
// the last sync pass; owners the snapshot lacks keep the allocator's.
func TestIPAMStatusReachableFromSnapshot(t *testing.T) {
	s := ipam.Status{Status: "ready",
		Owners: []ipam.OwnerStatus{{ID: 1, Name: "self", Reachable: true}, {ID: 2, Name: "dead", Reachable: true},
			{ID: 3, Name: "back", Reachable: false}, {ID: 4, Name: "unlisted", Reachable: true}},
		Runs: []ipam.RunStatus{{Owner: 2, Reachable: true}, {Owner: 3}, {Owner: 4, Reachable: true}}}
	up := map[peer.ID]bool{1: true, 2: false, 3: true}
	got := ipamStatusOf(s, nil, up)
	want := map[string]bool{"self": true, "dead": false, "back": true, "unlisted": true}
	for _, o := range got.Owners {
		if o.Reachable != want[o.Name] {
			t.Errorf("owner %s: reachable %v; want %v", o.Name, o.Reachable, want[o.Name])
		}
	}
	for i, wantRun := range []bool{false, true, true} {
		if got.Ranges[i].Reachable != wantRun {
			t.Errorf("run %d (owner %s): reachable %v; want %v", i, got.Ranges[i].Owner, got.Ranges[i].Reachable, wantRun)
		}
	}
}

// A stopped or dead peer's published report is stale: it is dropped, so
// that our side's report of its silence alone never confirms a break
// (NextHops then keeps the direct route to it), while a dead relay that we
// report is still avoided. A live peer that reaches everyone could relay,
// so a kept stale report would route to the stopped peer through it.
func TestPeerReportsOfDownPeersDropped(t *testing.T) {
	self, relay, stopped, other, live := peer.ID(1), peer.ID(2), peer.ID(3), peer.ID(4), peer.ID(5)
	peers := []peer.Info{
		{ID: relay, State: peer.Dead, Meta: peer.Meta{Unreachable: []peer.ID{other}}},
		{ID: stopped, State: peer.Stopped, Meta: peer.Meta{Unreachable: []peer.ID{self}}},
		{ID: other, State: peer.Alive, Meta: peer.Meta{Unreachable: []peer.ID{self}}},
		{ID: live, State: peer.Alive},
	}
	got := peerReports(self, peers, nil)
	if _, ok := got[stopped]; ok {
		t.Errorf("the stopped peer's report is kept: %v", got)
	}
	if _, ok := got[relay]; ok {
		t.Errorf("the dead peer's report is kept: %v", got)
	}
	if !slices.Equal(got[other], []peer.ID{self}) {
		t.Errorf("the live peer's report = %v; want [%v]", got[other], self)
	}
	// We cannot reach the stopped peer nor the dead relay, nor other; other
	// confirms its side.
	ids := []peer.ID{self, relay, stopped, other, live}
	adj := router.Adjacency(got)
	adj[self] = []peer.ID{relay, stopped, other}
	hops := router.NextHops(self, ids, adj)
	if via, ok := hops[stopped]; ok && via != stopped {
		t.Errorf("the stopped peer is relayed via %v; want direct (its stale report is no confirmation)", via)
	}
	if via, ok := hops[other]; ok && via == relay {
		t.Errorf("other is relayed via the dead relay")
	}
	// The stopped peer's report, were it kept, would confirm the break and
	// relay it: the check above can fail.
	stale := maps.Clone(adj)
	stale[stopped] = []peer.ID{self}
	if via := router.NextHops(self, ids, stale)[stopped]; via != live {
		t.Errorf("with the stale report the stopped peer's next hop = %v; want %v", via, live)
	}
}

// The allocators hear at once of a known peer that went up or down (or
// was forgotten); a peer new to them waits for the coalesced pass.
func TestLivenessChanged(t *testing.T) {
	a, b, c := peer.ID(1), peer.ID(2), peer.ID(3)
	known := map[peer.ID]bool{a: true, b: true}
	for _, tc := range []struct {
		name  string
		peers []peer.Info
		want  bool
	}{
		{"same", []peer.Info{{ID: a, State: peer.Alive}, {ID: b, State: peer.Alive}}, false},
		{"a new peer only", []peer.Info{{ID: a, State: peer.Alive}, {ID: b, State: peer.Alive}, {ID: c, State: peer.Alive}}, false},
		{"b died", []peer.Info{{ID: a, State: peer.Alive}, {ID: b, State: peer.Dead}}, true},
		{"b stopped", []peer.Info{{ID: a, State: peer.Alive}, {ID: b, State: peer.Stopped}}, true},
		{"b forgotten", []peer.Info{{ID: a, State: peer.Alive}}, true},
	} {
		if got := livenessChanged(known, tc.peers); got != tc.want {
			t.Errorf("%s: livenessChanged = %v; want %v", tc.name, got, tc.want)
		}
	}
	if !livenessChanged(map[peer.ID]bool{b: false}, []peer.Info{{ID: b, State: peer.Alive}}) {
		t.Errorf("b back up: livenessChanged = false; want true")
	}
}

// A peer keeps the time it came up while it stays up; one that comes back
// up gets the time it did; a peer not up has none.
func TestUpSince(t *testing.T) {
	a, b, c := peer.ID(1), peer.ID(2), peer.ID(3)
	t0 := time.Unix(1000, 0)
	now := t0.Add(time.Minute)
	known := map[peer.ID]time.Time{a: t0, b: t0}
	for _, tc := range []struct {
		name  string
		known map[peer.ID]time.Time
		peers []peer.Info
		want  map[peer.ID]time.Time
	}{
		{"still up", known, []peer.Info{{ID: a, State: peer.Alive}, {ID: b, State: peer.Alive}}, map[peer.ID]time.Time{a: t0, b: t0}},
		{"new peer", known, []peer.Info{{ID: a, State: peer.Alive}, {ID: b, State: peer.Alive}, {ID: c, State: peer.Alive}}, map[peer.ID]time.Time{a: t0, b: t0, c: now}},
		{"b stopped", known, []peer.Info{{ID: a, State: peer.Alive}, {ID: b, State: peer.Stopped}}, map[peer.ID]time.Time{a: t0}},
		{"b back", map[peer.ID]time.Time{a: t0}, []peer.Info{{ID: a, State: peer.Alive}, {ID: b, State: peer.Alive}}, map[peer.ID]time.Time{a: t0, b: now}},
		{"b forgotten", known, []peer.Info{{ID: a, State: peer.Alive}}, map[peer.ID]time.Time{a: t0}},
		{"b gone, c up", known, []peer.Info{{ID: a, State: peer.Alive}, {ID: c, State: peer.Alive}}, map[peer.ID]time.Time{a: t0, c: now}},
		{"b down, c up", known, []peer.Info{{ID: a, State: peer.Alive}, {ID: b, State: peer.Dead}, {ID: c, State: peer.Alive}}, map[peer.ID]time.Time{a: t0, c: now}},
	} {
		if got := upSince(tc.known, tc.peers, now); !maps.Equal(got, tc.want) {
			t.Errorf("%s: upSince = %v; want %v", tc.name, got, tc.want)
		}
	}
	// The same peers up: known itself, nothing allocated (every pass asks).
	same := []peer.Info{{ID: a, State: peer.Alive}, {ID: b, State: peer.Alive}, {ID: c, State: peer.Dead}}
	if allocs := testing.AllocsPerRun(20, func() { upSince(known, same, now) }); allocs != 0 {
		t.Errorf("upSince of the same peers up: %.0f allocations; want 0", allocs)
	}
	up := map[peer.ID]bool{a: true, b: true, c: false}
	if allocs := testing.AllocsPerRun(20, func() { upStates(up, same) }); allocs != 0 {
		t.Errorf("upStates of the same states: %.0f allocations; want 0", allocs)
	}
	if got := upStates(up, same[:2]); !maps.Equal(got, map[peer.ID]bool{a: true, b: true}) {
		t.Errorf("upStates with c forgotten = %v", got)
	}
}

// A peer that goes down while its link with us is relayed both ways keeps
// the relay (its datapath still relays to us); one whose report named us
// but whose link we found down only after it went silent, or that never
// named us, does not.
func TestRelayedAtDown(t *testing.T) {
	self, a, b, c, d, e, f := peer.ID(1), peer.ID(2), peer.ID(3), peer.ID(4), peer.ID(5), peer.ID(6), peer.ID(7)
	t0 := time.Unix(1000, 0)
	seen := t0.Add(time.Minute) // when each was last seen up
	now := seen.Add(5 * time.Second)
	peers := []peer.Info{
		{ID: a, State: peer.Stopped, LastSeen: seen, Meta: peer.Meta{Unreachable: []peer.ID{self}}},
		{ID: b, State: peer.Dead, LastSeen: seen, Meta: peer.Meta{Unreachable: []peer.ID{self}}},
		{ID: c, State: peer.Stopped, LastSeen: seen},
		{ID: d, State: peer.Alive, Meta: peer.Meta{Unreachable: []peer.ID{self}}},
		// Published, but not in effect yet when e stopped: its datapath
		// never relayed.
		{ID: e, State: peer.Stopped, LastSeen: seen, Meta: peer.Meta{Unreachable: []peer.ID{self}, UnreachableAt: now.Add(time.Second)}},
		// Withdrawn, but the withdrawal not in effect yet: still relayed.
		{ID: f, State: peer.Stopped, LastSeen: seen, Meta: peer.Meta{UnreachableAt: now.Add(time.Second)}},
	}
	reports := map[peer.ID]report{f: {cur: []peer.ID{self}, at: t0}}
	wasUp := map[peer.ID]bool{a: true, b: true, c: true, d: true, e: true, f: true}
	links := map[peer.ID]linkState{
		a: {Down: true, Changed: t0},                        // down long before a stopped: relayed both ways
		b: {Down: true, Changed: seen.Add(3 * time.Second)}, // down only once b went silent
		c: {Down: true, Changed: t0},                        // c never reported us
		d: {Down: true, Changed: t0},
		e: {Down: true, Changed: t0},
		f: {Down: true, Changed: t0},
	}
	got := relayedAtDown(nil, wasUp, peers, self, links, reports, now)
	if want := map[peer.ID]bool{a: true, b: false, c: false, e: false, f: true}; !maps.Equal(got, want) {
		t.Errorf("relayedAtDown = %v; want %v", got, want)
	}
	peers = peers[:4]
	delete(got, e)
	delete(got, f)
	// Kept while down, whatever the links say later; dropped once up.
	links[a] = linkState{}
	peers[0].State = peer.Stopped
	if again := relayedAtDown(got, wasUp, peers, self, links, reports, now); !again[a] {
		t.Errorf("a's relay forgotten while a is still down: %v", again)
	}
	peers[0].State = peer.Alive
	if again := relayedAtDown(got, wasUp, peers, self, links, reports, now); len(again) != 2 || again[a] {
		t.Errorf("after a came back: %v; want only b and c", again)
	}
	// peerReports keeps only the edge with us of a relayed down peer, and
	// NextHops then relays to it, as its frozen datapath does to us.
	reported := peerReports(self, []peer.Info{peers[1], {ID: a, State: peer.Stopped, Meta: peer.Meta{Unreachable: []peer.ID{self, d}}}, {ID: d, State: peer.Alive}}, map[peer.ID]bool{a: true, b: false})
	if !slices.Equal(reported[a], []peer.ID{self}) || reported[b] != nil {
		t.Errorf("peerReports = %v; want a: [self] only, nothing of b", reported)
	}
	adj := router.Adjacency(reported)
	adj[self] = []peer.ID{a, b} // our side: a held down, dead b silent
	if via := router.NextHops(self, []peer.ID{self, a, b, d}, adj)[a]; via != d {
		t.Errorf("next hop to the stopped a = %v; want the relay %v", via, d)
	}
}

// TestPassDue: a ticker's pass is skipped only when nothing it reads
// changed, the last pass ended cleanly, and it is younger than
// fullPassEvery.
func TestPassDue(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	st := passStamp{mesh: 7, ring: 3, underlay: 1}
	last := lastPass{stamp: st, clean: true, at: t0}
	for _, c := range []struct {
		what string
		last lastPass
		cur  passStamp
		now  time.Time
		want bool
	}{
		{"nothing changed", last, st, t0.Add(syncEvery), false},
		{"nothing changed, just under the full pass", last, st, t0.Add(fullPassEvery - time.Millisecond), false},
		{"full pass due", last, st, t0.Add(fullPassEvery), true},
		{"membership changed", last, passStamp{mesh: 8, ring: 3, underlay: 1}, t0.Add(syncEvery), true},
		{"ring changed", last, passStamp{mesh: 7, ring: 4, underlay: 1}, t0.Add(syncEvery), true},
		{"underlay pool changed", last, passStamp{mesh: 7, ring: 3, underlay: 2}, t0.Add(syncEvery), true},
		{"last pass not clean", lastPass{stamp: st, at: t0}, st, t0.Add(syncEvery), true},
		{"no pass yet", lastPass{}, passStamp{}, t0, true},
	} {
		if got := c.last.due(c.cur, c.now); got != c.want {
			t.Errorf("%s: due = %v; want %v", c.what, got, c.want)
		}
	}
}

// TestMergeStrings: a's elements in order, then b's that are new, each
// once.
func TestMergeStrings(t *testing.T) {
	for _, tc := range []struct{ a, b, want []string }{
		{nil, nil, nil},
		{[]string{"x"}, nil, []string{"x"}},
		{nil, []string{"y", "x", "y"}, []string{"y", "x"}},
		{[]string{"x", "z"}, []string{"y", "x", "w", "y", "z"}, []string{"x", "z", "y", "w"}},
	} {
		if got := mergeStrings(tc.a, tc.b); !slices.Equal(got, tc.want) {
			t.Errorf("mergeStrings(%q, %q) = %q; want %q", tc.a, tc.b, got, tc.want)
		}
	}
}

// BenchmarkJoinTargets merges the launch peers with the addresses of
// 2,000 peers last seen, as every sync pass of a 2,000-peer mesh did.
func BenchmarkJoinTargets(b *testing.B) {
	seen := make([]string, 2000)
	for i := range seen {
		seen[i] = fmt.Sprintf("10.%d.%d.1:6783", i>>8, i&255)
	}
	for b.Loop() {
		mergeStrings(mergeStrings([]string{"10.0.0.1:6783"}, seen), nil)
	}
}
