package daemon

import (
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/weftmesh/weft/api/client"
	"github.com/weftmesh/weft/peer"
)

var (
	selfID = peer.ID(1)
	h2ID   = peer.ID(2)
	h3ID   = peer.ID(3)
	h4ID   = peer.ID(4)
)

func pfx(s string) []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix(s)} }

func info(id peer.ID, name, addr string, st peer.State, key string) peer.Info {
	return peer.Info{ID: id, Name: name, Addr: netip.MustParseAddr(addr), State: st,
		LastSeen: time.Date(2026, 12, 4, 6, 0, 0, 0, time.UTC),
		Meta:     peer.Meta{WGKey: key, WGPort: 51820, Bridge: netip.MustParseAddr("10.40.0.1")}}
}

// TestRoutePeersFollowTheRing: every ring owner is routed whatever gossip
// says of it; a peer that owns nothing is routed only while it is up.
func TestRoutePeersFollowTheRing(t *testing.T) {
	ranges := map[peer.ID][]netip.Prefix{selfID: pfx("10.32.0.0/13"), h2ID: pfx("10.40.0.0/14"), h3ID: pfx("10.44.0.0/14")}
	known := map[peer.ID]ownerInfo{
		h3ID: {Name: "h3", Underlay: netip.MustParseAddr("192.168.1.3"), WGKey: "k3-old", Bridge: netip.MustParseAddr("10.44.0.1")},
	}
	tests := []struct {
		name  string
		peers []peer.Info
		known map[peer.ID]ownerInfo
		want  []string // "name underlay key"
	}{
		{"all alive", []peer.Info{info(selfID, "h1", "192.168.1.1", peer.Alive, "k1"), info(h2ID, "h2", "192.168.1.2", peer.Alive, "k2"),
			info(h3ID, "h3", "192.168.1.3", peer.Alive, "k3")}, nil,
			[]string{"h2 192.168.1.2 k2", "h3 192.168.1.3 k3"}},
		{"h2 stopped, h3 dead: both kept", []peer.Info{info(h2ID, "h2", "192.168.1.2", peer.Stopped, "k2"),
			info(h3ID, "h3", "192.168.1.3", peer.Dead, "k3")}, nil,
			[]string{"h2 192.168.1.2 k2", "h3 192.168.1.3 k3"}},
		{"h3 unknown to gossip (restart while it was down): from the owner table", []peer.Info{info(h2ID, "h2", "192.168.1.2", peer.Alive, "k2")}, known,
			[]string{"h2 192.168.1.2 k2", "h3 192.168.1.3 k3-old"}},
		{"h3 dead in gossip and known: the table (gossip may hold a stale node)", []peer.Info{info(h2ID, "h2", "192.168.1.2", peer.Alive, "k2"),
			info(h3ID, "h3", "192.168.1.3", peer.Dead, "k3")}, known,
			[]string{"h2 192.168.1.2 k2", "h3 192.168.1.3 k3-old"}},
		{"h4 alive with no space yet: routed; h4 dead with no space: not", []peer.Info{info(h2ID, "h2", "192.168.1.2", peer.Alive, "k2"),
			info(h4ID, "h4", "192.168.1.4", peer.Alive, "k4")}, nil,
			[]string{"h2 192.168.1.2 k2", "h4 192.168.1.4 k4"}},
		{"h4 left with no space: gone", []peer.Info{info(h2ID, "h2", "192.168.1.2", peer.Alive, "k2"),
			info(h4ID, "h4", "192.168.1.4", peer.Left, "k4")}, nil,
			[]string{"h2 192.168.1.2 k2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, p := range routePeers(selfID, ranges, tt.peers, tt.known) {
				got = append(got, p.Info.Name+" "+p.Info.Underlay.String()+" "+p.Info.WGKey)
				if len(ranges[p.ID]) > 0 && !cmp.Equal(p.Ranges, ranges[p.ID], cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })) {
					t.Errorf("%s ranges %v; want %v", p.Info.Name, p.Ranges, ranges[p.ID])
				}
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("routePeers (-want +got):\n%s", d)
			}
		})
	}
}

// TestRoutePeersRestartedOwner: an owner that has just restarted is up in
// gossip before it publishes its bridge address; until it does, the route
// to it keeps the bridge that was known (the vxlan route goes via it), and
// what gossip does publish wins. The CI once lost 2.9 s of pings to h3
// after its relaunch because that route was dropped in the gap.
func TestRoutePeersRestartedOwner(t *testing.T) {
	ranges := map[peer.ID][]netip.Prefix{selfID: pfx("10.32.0.0/13"), h3ID: pfx("10.44.0.0/14")}
	known := map[peer.ID]ownerInfo{
		h3ID: {Name: "h3", Underlay: netip.MustParseAddr("192.168.1.3"), WGKey: "k3", WGPort: 51820, Bridge: netip.MustParseAddr("10.44.0.1")},
	}
	fresh := info(h3ID, "h3", "192.168.1.3", peer.Alive, "")
	fresh.Meta.Bridge, fresh.Meta.WGPort = netip.Addr{}, 0
	got := routePeers(selfID, ranges, []peer.Info{fresh}, known)
	if len(got) != 1 || got[0].Info.Bridge != known[h3ID].Bridge || got[0].Info.WGKey != "k3" || got[0].Info.WGPort != 51820 {
		t.Fatalf("routePeers for a restarted h3 = %+v; want the known bridge, key and port", got)
	}
	next, _ := learnOwners(known, selfID, ranges, []peer.Info{fresh})
	if next[h3ID].Bridge != known[h3ID].Bridge {
		t.Errorf("learnOwners forgot h3's bridge while h3 had not published it: %+v", next[h3ID])
	}
	moved := info(h3ID, "h3", "192.168.1.3", peer.Alive, "k3-new")
	moved.Meta.Bridge = netip.MustParseAddr("10.44.0.9")
	got = routePeers(selfID, ranges, []peer.Info{moved}, known)
	if got[0].Info.Bridge != moved.Meta.Bridge || got[0].Info.WGKey != "k3-new" {
		t.Errorf("routePeers = %+v; want what gossip publishes", got[0].Info)
	}
}

// TestLearnOwners: the table holds each ring owner's newest description,
// keeps what it knew of owners that are down, forgets peers that own
// nothing, and reports a change only when a persisted field moved.
func TestLearnOwners(t *testing.T) {
	ranges := map[peer.ID][]netip.Prefix{selfID: pfx("10.32.0.0/13"), h2ID: pfx("10.40.0.0/14"), h3ID: pfx("10.44.0.0/14")}
	up := []peer.Info{info(selfID, "h1", "192.168.1.1", peer.Alive, "k1"), info(h2ID, "h2", "192.168.1.2", peer.Alive, "k2"),
		info(h3ID, "h3", "192.168.1.3", peer.Alive, "k3")}
	known, changed := learnOwners(nil, selfID, ranges, up)
	if !changed || len(known) != 2 || known[h3ID].WGKey != "k3" {
		t.Fatalf("first learn = %v, %v; want h2 and h3, changed", known, changed)
	}
	// Probes move LastSeen a little: no change to persist.
	later := append([]peer.Info(nil), up...)
	for i := range later {
		later[i].LastSeen = later[i].LastSeen.Add(10 * time.Second)
	}
	if _, changed := learnOwners(known, selfID, ranges, later); changed {
		t.Errorf("a 10 s LastSeen move reported as a change")
	}
	for i := range later {
		later[i].LastSeen = later[i].LastSeen.Add(2 * time.Minute)
	}
	if _, changed := learnOwners(known, selfID, ranges, later); !changed {
		t.Errorf("a 2 min LastSeen move not reported")
	}
	// An unchanged table is not built again (every sync pass asks).
	if allocs := testing.AllocsPerRun(20, func() { learnOwners(known, selfID, ranges, up) }); allocs > 0 {
		t.Errorf("learnOwners of an unchanged table: %.0f allocations; want none (the small index of peers stays on the stack)", allocs)
	}
	// h3 goes down and comes back with a new key while down in our view:
	// the table keeps the last key learned while it was up.
	down := []peer.Info{up[0], up[1], info(h3ID, "h3", "192.168.1.3", peer.Dead, "k3-new")}
	next, changed := learnOwners(known, selfID, ranges, down)
	if changed || next[h3ID].WGKey != "k3" {
		t.Errorf("h3 down: key %q, changed %v; want k3 kept, no change", next[h3ID].WGKey, changed)
	}
	// h3's space is reclaimed: it leaves the table.
	delete(ranges, h3ID)
	next, changed = learnOwners(next, selfID, ranges, down)
	if _, ok := next[h3ID]; ok || !changed {
		t.Errorf("after reclaim: h3 still in the table (%v) or no change (%v)", ok, changed)
	}
}

func TestOwnersFileRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if got, err := loadOwners(dir); err != nil || len(got) != 0 {
		t.Fatalf("loadOwners(empty dir) = %v, %v", got, err)
	}
	want := map[peer.ID]ownerInfo{h3ID: {Name: "h3", Underlay: netip.MustParseAddr("192.168.1.3"), WGKey: "k3", WGPort: 51820,
		Bridge: netip.MustParseAddr("10.44.0.1"), LastSeen: time.Date(2026, 12, 4, 6, 0, 0, 0, time.UTC)}}
	if err := saveOwners(dir, want); err != nil {
		t.Fatal(err)
	}
	got, err := loadOwners(dir)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
		t.Errorf("owners round trip (-want +got):\n%s", d)
	}
}

// TestOwnerProblem: status advises rmpeer only for an owner down long
// enough that its host is probably gone; never for one that is up, and
// not for one a peer that just started has not met yet.
func TestOwnerProblem(t *testing.T) {
	now := time.Date(2026, 12, 4, 6, 0, 0, 0, time.UTC)
	owner := client.IPAMOwner{Name: "h3", ID: h3ID.String(), Owned: 131072}
	seen := func(st peer.State, ago time.Duration) peer.Info {
		return peer.Info{Name: "h3", ID: h3ID, State: st, LastSeen: now.Add(-ago)}
	}
	tests := []struct {
		name       string
		p          peer.Info
		known      bool
		uptime     time.Duration
		wantEmpty  bool
		wantRmpeer bool
		wantWords  string
	}{
		{"alive", seen(peer.Alive, 0), true, time.Hour, true, false, ""},
		{"not met yet, new mesh", peer.Info{}, false, 10 * time.Second, true, false, ""},
		{"not met after a long time", peer.Info{}, false, time.Hour, false, true, "has not heard from"},
		{"stopped a minute ago", seen(peer.Stopped, time.Minute), true, time.Hour, false, false, "pods stay reachable"},
		{"dead a minute ago", seen(peer.Dead, time.Minute), true, time.Hour, false, false, "routes to them are kept"},
		{"dead for 10 min", seen(peer.Dead, 10*time.Minute), true, time.Hour, false, true, "unreachable"},
		{"stopped for 10 min", seen(peer.Stopped, 10*time.Minute), true, time.Hour, false, true, "stopped"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ownerProblem(owner, tt.p, tt.known, now, now.Add(-tt.uptime))
			if (got == "") != tt.wantEmpty {
				t.Fatalf("ownerProblem = %q; want empty %v", got, tt.wantEmpty)
			}
			if strings.Contains(got, "weft rmpeer h3") != tt.wantRmpeer {
				t.Errorf("ownerProblem = %q; want rmpeer advice %v", got, tt.wantRmpeer)
			}
			if !strings.Contains(got, tt.wantWords) {
				t.Errorf("ownerProblem = %q; want it to say %q", got, tt.wantWords)
			}
		})
	}
	if got := ownerProblem(client.IPAMOwner{Name: "h3", Owned: 0}, seen(peer.Dead, time.Hour), true, now, now.Add(-time.Hour)); got != "" {
		t.Errorf("an owner of nothing is a problem: %q", got)
	}
}

// TestSameButSeen: a table whose owners moved only in LastSeen is the same
// for the once-a-minute write; any other field, or an owner more or less,
// is a change.
func TestSameButSeen(t *testing.T) {
	a := map[peer.ID]ownerInfo{h2ID: {Name: "h2", WGKey: "k2", LastSeen: time.Unix(100, 0)}, h3ID: {Name: "h3", WGKey: "k3"}}
	b := maps.Clone(a)
	b[h2ID] = ownerInfo{Name: "h2", WGKey: "k2", LastSeen: time.Unix(400, 0)}
	if !sameButSeen(a, b) {
		t.Errorf("LastSeen alone moved: want same")
	}
	b[h3ID] = ownerInfo{Name: "h3", WGKey: "k3-new"}
	if sameButSeen(a, b) {
		t.Errorf("a key changed: want different")
	}
	delete(b, h3ID)
	if sameButSeen(a, b) {
		t.Errorf("an owner went: want different")
	}
}

// TestOwnersWritesPaced: owners.json takes the table's first change at
// once, a change within persistEvery of that write only on a later pass,
// and then the table as it is by then.
func TestOwnersWritesPaced(t *testing.T) {
	d := &Daemon{cfg: Config{DataDir: t.TempDir()}, log: slog.New(slog.DiscardHandler)}
	h2 := info(h2ID, "h2", "192.168.1.2", peer.Alive, "k2")
	h3 := info(h3ID, "h3", "192.168.1.3", peer.Alive, "k3")
	ranges := map[peer.ID][]netip.Prefix{h2ID: pfx("10.40.0.0/14")}
	onDisk := func() map[peer.ID]ownerInfo {
		t.Helper()
		got, err := loadOwners(d.cfg.DataDir)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	d.learnOwners([]peer.Info{h2, h3}, ranges)
	if got := onDisk(); len(got) != 1 || d.ownersDirty {
		t.Fatalf("after the first change: file %v, dirty %v; want h2 written", got, d.ownersDirty)
	}
	ranges[h3ID] = pfx("10.44.0.0/14") // h3 gets space right after
	d.learnOwners([]peer.Info{h2, h3}, ranges)
	if got := onDisk(); len(got) != 1 || !d.ownersDirty {
		t.Fatalf("a change within persistEvery: file %v, dirty %v; want it pending", got, d.ownersDirty)
	}
	d.ownersSaved = d.ownersSaved.Add(-persistEvery) // time passes
	d.learnOwners([]peer.Info{h2, h3}, ranges)       // a pass with nothing new
	if got := onDisk(); len(got) != 2 || got[h3ID].WGKey != "k3" || d.ownersDirty {
		t.Fatalf("a later pass: file %v, dirty %v; want h2 and h3 written", got, d.ownersDirty)
	}
}

// TestOwnersWritesPacedBySize: a large owner table is written at most every
// persistGap (10 ms an owner past 200): 5 s at 500 owners, so a change 2 s
// after a write still waits.
func TestOwnersWritesPacedBySize(t *testing.T) {
	d := &Daemon{cfg: Config{DataDir: t.TempDir()}, log: slog.New(slog.DiscardHandler)}
	var peers []peer.Info
	ranges := map[peer.ID][]netip.Prefix{}
	for i := range 500 {
		id := peer.ID(0x1000 + i)
		peers = append(peers, info(id, fmt.Sprint("p", i), fmt.Sprintf("192.168.%d.%d", i/250, 1+i%250), peer.Alive, fmt.Sprint("k", i)))
		ranges[id] = pfx(fmt.Sprintf("10.%d.%d.0/24", i/256, i%256))
	}
	d.learnOwners(peers, ranges)
	if d.ownersDirty {
		t.Fatal("the first table: want it written at once")
	}
	peers[0] = info(peers[0].ID, "p0", "192.168.0.1", peer.Alive, "k0-new") // p0's key changes
	for _, ago := range []time.Duration{0, persistEvery, 5*time.Second - time.Millisecond} {
		d.ownersSaved = time.Now().Add(-ago)
		d.learnOwners(peers, ranges)
		if !d.ownersDirty {
			t.Fatalf("a change %v after the last write of 500 owners: written; want it pending until %v", ago, persistGap(500))
		}
	}
	d.ownersSaved = time.Now().Add(-5 * time.Second)
	d.learnOwners(peers, ranges)
	got, err := loadOwners(d.cfg.DataDir)
	if err != nil || d.ownersDirty || got[peers[0].ID].WGKey != "k0-new" {
		t.Fatalf("5 s after: dirty %v, p0 on disk %+v, %v; want the change written", d.ownersDirty, got[peers[0].ID], err)
	}
}

func TestPersistGap(t *testing.T) {
	for _, c := range []struct {
		n    int
		want time.Duration
	}{{0, persistEvery}, {100, persistEvery}, {200, persistEvery}, {500, 5 * time.Second}, {1000, 10 * time.Second}, {2000, 20 * time.Second}} {
		if got := persistGap(c.n); got != c.want {
			t.Errorf("persistGap(%d) = %v; want %v", c.n, got, c.want)
		}
	}
}
