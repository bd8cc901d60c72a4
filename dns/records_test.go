package dns

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/weftmesh/weft/dns/dnstest"
	"github.com/weftmesh/weft/peer"
	"pgregory.net/rapid"
)

func genRecord() *rapid.Generator[record] {
	return rapid.Custom(func(t *rapid.T) record {
		return record{
			Owner:     peer.ID(rapid.IntRange(1, 3).Draw(t, "owner")),
			Name:      rapid.SampledFrom([]string{"a.weft.local.", "b.weft.local.", "c.x.weft.local."}).Draw(t, "name"),
			Addr:      netip.AddrFrom4([4]byte{10, 32, 0, byte(rapid.IntRange(1, 3).Draw(t, "addr"))}),
			Container: rapid.SampledFrom([]string{"", "c1", "c2"}).Draw(t, "container"),
			Version:   uint64(rapid.IntRange(1, 4).Draw(t, "version")),
			Deleted:   rapid.Bool().Draw(t, "deleted"),
		}
	})
}

// merged applies the record lists in order to a fresh set and returns its
// content (without local timestamps), sorted.
func merged(lists ...[]record) []record {
	rs := newRecordSet()
	for _, l := range lists {
		for _, r := range l {
			rs.apply(r)
		}
	}
	return sortRecords(rs.all())
}

func sortRecords(rs []record) []record {
	slices.SortFunc(rs, func(a, b record) int {
		if c := a.Name + a.Addr.String() + a.Owner.String(); c != b.Name+b.Addr.String()+b.Owner.String() {
			if c < b.Name+b.Addr.String()+b.Owner.String() {
				return -1
			}
			return 1
		}
		return 0
	})
	return rs
}

func TestMergeIsACRDT(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		gen := rapid.SliceOfN(genRecord(), 0, 12)
		a, b, c := gen.Draw(t, "a"), gen.Draw(t, "b"), gen.Draw(t, "c")
		ab := merged(a, b)
		if d := cmp.Diff(ab, merged(b, a), cmpAddr); d != "" {
			t.Fatalf("merge not commutative (-ab +ba):\n%s", d)
		}
		if d := cmp.Diff(merged(ab, c), merged(a, merged(b, c)), cmpAddr); d != "" {
			t.Fatalf("merge not associative:\n%s", d)
		}
		if d := cmp.Diff(ab, merged(ab, ab), cmpAddr); d != "" {
			t.Fatalf("merge not idempotent:\n%s", d)
		}
		// Order inside one list does not matter either.
		rev := slices.Clone(a)
		slices.Reverse(rev)
		if d := cmp.Diff(merged(a), merged(rev), cmpAddr); d != "" {
			t.Fatalf("order of records matters:\n%s", d)
		}
	})
}

// TestReplicasConverge runs random adds and removals on three replicas
// whose messages are delayed, reordered, duplicated and lost, then lets
// anti-entropy run: every replica must hold exactly what the owners hold.
func TestReplicasConverge(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		bus := dnstest.NewBus()
		bus.Hold(true)
		ids := []peer.ID{1, 2, 3}
		srvs := map[peer.ID]*Server{}
		type key struct{ name, addr string }
		model := map[peer.ID]map[key]bool{}
		for _, id := range ids {
			s, err := New(testConfig(id), bus.Transport(id))
			if err != nil {
				t.Fatal(err)
			}
			srvs[id] = s
			bus.Join(id, s)
			model[id] = map[key]bool{}
		}
		names := []string{"web", "db", "x.ns"}
		for step := rapid.IntRange(1, 40).Draw(t, "steps"); step > 0; step-- {
			id := rapid.SampledFrom(ids).Draw(t, "peer")
			s := srvs[id]
			name := rapid.SampledFrom(names).Draw(t, "name")
			addr := netip.AddrFrom4([4]byte{10, 32, byte(id), byte(rapid.IntRange(1, 2).Draw(t, "addr"))})
			switch rapid.IntRange(0, 3).Draw(t, "op") {
			case 0, 1:
				if err := s.Add(name, addr, "c-"+name); err != nil {
					t.Fatal(err)
				}
				model[id][key{name + ".weft.local.", addr.String()}] = true
			case 2:
				err := s.Remove(name, addr)
				if had := model[id][key{name + ".weft.local.", addr.String()}]; had != (err == nil) {
					t.Fatalf("Remove(%s, %s) = %v; model had it: %v", name, addr, err, had)
				}
				delete(model[id], key{name + ".weft.local.", addr.String()})
			case 3:
				_ = s.RemoveContainer("c-" + name)
				for k := range model[id] {
					if k.name == name+".weft.local." {
						delete(model[id], k)
					}
				}
			}
			// Deliver some queued messages in random order, dropping or
			// duplicating a few.
			q := bus.Take()
			perm := rapid.Permutation(q).Draw(t, "order")
			for i, m := range perm {
				switch rapid.IntRange(0, 5).Draw(t, fmt.Sprintf("fate%d", i)) {
				case 0: // lost
				case 1:
					_ = bus.Deliver(m)
					_ = bus.Deliver(m)
				default:
					if err := bus.Deliver(m); err != nil {
						t.Fatalf("Deliver: %v", err)
					}
				}
			}
		}
		if err := bus.AntiEntropy(); err != nil {
			t.Fatal(err)
		}
		var want []Entry
		for id, recs := range model {
			for k := range recs {
				want = append(want, Entry{Name: k.name, Addr: netip.MustParseAddr(k.addr), Owner: id, ContainerID: "c-" + k.name[:len(k.name)-len(".weft.local.")]})
			}
		}
		slices.SortFunc(want, func(a, b Entry) int {
			return strings.Compare(a.Name+a.Addr.String(), b.Name+b.Addr.String())
		})
		for _, id := range ids {
			got := srvs[id].Entries()
			slices.SortFunc(got, func(a, b Entry) int {
				return strings.Compare(a.Name+a.Addr.String(), b.Name+b.Addr.String())
			})
			if d := cmp.Diff(want, got, cmpAddr); d != "" {
				t.Fatalf("replica %s after anti-entropy (-want +got):\n%s", id, d)
			}
		}
	})
}

var cmpAddr = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

func TestMembershipHidesAndCollects(t *testing.T) {
	s := newServer(t, testConfig(self), nil)
	if err := s.Add("mine", mustAddr("10.32.0.1"), ""); err != nil {
		t.Fatal(err)
	}
	recs := []record{{Owner: other, Name: "theirs.weft.local.", Addr: mustAddr("10.32.0.2"), Version: 7}}
	if err := s.Merge(other, encodeRecords(kindDelta, recs)); err != nil {
		t.Fatal(err)
	}
	names := func() []string {
		var out []string
		for _, e := range s.Entries() {
			out = append(out, e.Name)
		}
		return out
	}
	steps := []struct {
		name  string
		peers []peer.Info // nil: no SetPeers call
		want  []string
	}{
		{"membership unknown: all visible", nil, []string{"mine.weft.local.", "theirs.weft.local."}},
		{"other alive", []peer.Info{{ID: self, State: peer.Alive}, {ID: other, State: peer.Alive}}, []string{"mine.weft.local.", "theirs.weft.local."}},
		{"other stopped: hidden", []peer.Info{{ID: self, State: peer.Alive}, {ID: other, State: peer.Stopped}}, []string{"mine.weft.local."}},
		{"other dead: hidden", []peer.Info{{ID: self, State: peer.Alive}, {ID: other, State: peer.Dead}}, []string{"mine.weft.local."}},
		{"other back", []peer.Info{{ID: other, State: peer.Alive}}, []string{"mine.weft.local.", "theirs.weft.local."}},
		{"other forgotten: hidden", []peer.Info{{ID: self, State: peer.Alive}}, []string{"mine.weft.local."}},
	}
	for _, st := range steps {
		if st.peers != nil {
			s.SetPeers(st.peers)
		}
		if d := cmp.Diff(st.want, names()); d != "" {
			t.Errorf("%s: Entries (-want +got):\n%s", st.name, d)
		}
		if got := len(s.Lookup("theirs")) == 1; got != slices.Contains(st.want, "theirs.weft.local.") {
			t.Errorf("%s: Lookup(theirs) visible = %v", st.name, got)
		}
	}
	// Gone for longer than DeadPeerTTL: deleted; rejoining brings it back by gossip.
	s.collect(time.Now().Add(s.cfg.DeadPeerTTL + time.Minute))
	s.SetPeers([]peer.Info{{ID: self, State: peer.Alive}, {ID: other, State: peer.Alive}})
	if got := names(); len(got) != 1 {
		t.Errorf("after DeadPeerTTL and rejoin before gossip: Entries = %v; want only ours", got)
	}
	if err := s.Merge(other, encodeRecords(kindFull, recs)); err != nil {
		t.Fatal(err)
	}
	if got := names(); len(got) != 2 {
		t.Errorf("after the rejoined peer's state: Entries = %v; want both", got)
	}
	// Tombstones are kept TombstoneTTL, then collected.
	if err := s.Remove("mine", netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	s.collect(time.Now())
	if n := len(s.set.recs); n != 2 {
		t.Errorf("tombstone collected early: %d records; want 2", n)
	}
	s.collect(time.Now().Add(s.cfg.TombstoneTTL + time.Second))
	if n := len(s.set.recs); n != 1 {
		t.Errorf("after TombstoneTTL: %d records; want 1", n)
	}
	// A tombstone older than TombstoneTTL handed back by a peer goes at the next collection.
	old := record{Owner: other, Name: "old.weft.local.", Addr: mustAddr("10.32.0.3"), Deleted: true,
		Version: uint64(time.Now().Add(-2 * s.cfg.TombstoneTTL).UnixNano())}
	if err := s.Merge(other, encodeRecords(kindDelta, []record{old})); err != nil {
		t.Fatal(err)
	}
	s.collect(time.Now())
	if n := len(s.set.recs); n != 1 {
		t.Errorf("old tombstone from a peer kept: %d records; want 1", n)
	}
}

// TestOwnersStayVisible: records of a peer that is down but still owns
// address space answer (its pods are routed and reachable while its host
// runs); they hide once it owns nothing.
func TestOwnersStayVisible(t *testing.T) {
	s := newServer(t, testConfig(self), nil)
	recs := []record{{Owner: other, Name: "theirs.weft.local.", Addr: mustAddr("10.32.0.2"), Container: "c1", Version: 7}}
	if err := s.Merge(other, encodeRecords(kindDelta, recs)); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name    string
		state   peer.State
		owners  []peer.ID
		visible bool
	}{
		{"alive owner", peer.Alive, []peer.ID{self, other}, true},
		{"stopped owner", peer.Stopped, []peer.ID{self, other}, true},
		{"dead owner", peer.Dead, []peer.ID{self, other}, true},
		{"dead, space reclaimed", peer.Dead, []peer.ID{self}, false},
		{"alive, owns nothing", peer.Alive, []peer.ID{self}, true},
	}
	for _, st := range steps {
		s.SetPeers([]peer.Info{{ID: self, State: peer.Alive}, {ID: other, State: st.state}})
		s.SetOwners(st.owners)
		if got := len(s.Lookup("theirs")) == 1; got != st.visible {
			t.Errorf("%s: Lookup(theirs) visible = %v; want %v", st.name, got, st.visible)
		}
	}
	// Hidden (dead, reclaimed) for longer than DeadPeerTTL: collected.
	s.SetPeers([]peer.Info{{ID: self, State: peer.Alive}, {ID: other, State: peer.Dead}})
	s.SetOwners([]peer.ID{self})
	s.collect(time.Now().Add(s.cfg.DeadPeerTTL + time.Minute))
	if n := len(s.set.recs); n != 0 {
		t.Errorf("records of a reclaimed dead peer after DeadPeerTTL: %d; want 0", n)
	}
}

// TestSyncOwnedFollowsAllocations: a name answers only while the
// allocation behind it exists, even when a stale copy of our own record
// comes back by gossip (after a restart that applied a spooled release, or
// a partition that outlived the tombstone).
func TestSyncOwnedFollowsAllocations(t *testing.T) {
	var tr recordingTransport
	s := newServer(t, testConfig(self), &tr)
	a1, a2 := mustAddr("10.32.0.5"), mustAddr("10.32.0.6")
	if err := s.Add("manual", mustAddr("10.40.0.9"), ""); err != nil {
		t.Fatal(err)
	}
	// Two pods allocated: both names appear.
	want := []Owned{{Name: "p1.ns", Addr: a1, Container: "c1"}, {Name: "p2.ns", Addr: a2, Container: "c2"}}
	added, removed, err := s.SyncOwned(want, map[string]netip.Addr{"c1": a1, "c2": a2})
	if err != nil || added != 2 || removed != 0 {
		t.Fatalf("SyncOwned(two pods) = %d, %d, %v; want 2, 0, nil", added, removed, err)
	}
	added, removed, _ = s.SyncOwned(want, map[string]netip.Addr{"c1": a1, "c2": a2})
	if added+removed != 0 {
		t.Errorf("SyncOwned twice changed %d, %d; want nothing", added, removed)
	}
	// A stale copy of a record of ours for a container we never had (or
	// released while down) comes back by gossip from another peer.
	stale := record{Owner: self, Name: "gone.ns.weft.local.", Addr: mustAddr("10.32.0.7"), Container: "c3",
		Version: uint64(time.Now().Add(time.Hour).UnixNano())} // even stamped in our future
	if err := s.Merge(other, encodeRecords(kindFull, []record{stale})); err != nil {
		t.Fatal(err)
	}
	if len(s.Lookup("gone.ns")) != 1 {
		t.Fatalf("stale record not merged")
	}
	// p2 released; the stale one has no allocation: both go, manual stays.
	tr.reset()
	added, removed, _ = s.SyncOwned(want[:1], map[string]netip.Addr{"c1": a1})
	if added != 0 || removed != 2 {
		t.Errorf("SyncOwned after release = %d added, %d removed; want 0, 2", added, removed)
	}
	for name, want := range map[string]int{"p1.ns": 1, "p2.ns": 0, "gone.ns": 0, "manual": 1} {
		if got := len(s.Lookup(name)); got != want {
			t.Errorf("Lookup(%s) = %d addresses; want %d", name, got, want)
		}
	}
	// The tombstones were broadcast and beat the stale copy on any replica.
	replica := newServer(t, testConfig(other), nil)
	if err := replica.Merge(self, encodeRecords(kindFull, []record{stale})); err != nil {
		t.Fatal(err)
	}
	for _, msg := range tr.messages() {
		if err := replica.Merge(self, msg); err != nil {
			t.Fatal(err)
		}
	}
	if got := replica.Lookup("gone.ns"); len(got) != 0 {
		t.Errorf("replica still answers the stale name: %v", got)
	}
}

// recordingTransport keeps every broadcast.
type recordingTransport struct {
	mu   sync.Mutex
	msgs [][]byte
}

func (r *recordingTransport) Broadcast(msg []byte) {
	r.mu.Lock()
	r.msgs = append(r.msgs, slices.Clone(msg))
	r.mu.Unlock()
}

func (r *recordingTransport) reset() {
	r.mu.Lock()
	r.msgs = nil
	r.mu.Unlock()
}

func (r *recordingTransport) messages() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.msgs)
}

func TestMergeRejectsBadInput(t *testing.T) {
	s := newServer(t, testConfig(self), nil)
	if err := s.Add("web", mustAddr("10.32.0.1"), "c1"); err != nil {
		t.Fatal(err)
	}
	before := s.FullState()
	good := record{Owner: other, Name: "x.weft.local.", Addr: mustAddr("10.32.0.2"), Version: 1}
	foreign := good
	foreign.Owner = gone
	badName := good
	badName.Name = "Bad Name."
	for _, tc := range []struct {
		name string
		msg  []byte
		want error
	}{
		{"empty", nil, ErrBadMessage},
		{"wrong version", []byte{9, kindDelta, 0}, ErrBadMessage},
		{"delta of another owner", encodeRecords(kindDelta, []record{good, foreign}), errForeignDelta},
		{"bad name", encodeRecords(kindFull, []record{good, badName}), ErrBadMessage},
		{"trailing bytes", append(encodeRecords(kindFull, []record{good}), 0), ErrBadMessage},
		{"huge count", []byte{wireVersion, kindFull, 0xff, 0xff, 0xff, 0x0f}, ErrBadMessage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := s.Merge(other, tc.msg); !errors.Is(err, tc.want) {
				t.Errorf("Merge(%x) = %v; want %v", tc.msg, err, tc.want)
			}
			if d := cmp.Diff(before, s.FullState()); d != "" {
				t.Errorf("state changed by a rejected message")
			}
		})
	}
}

func TestAddValidation(t *testing.T) {
	s := newServer(t, testConfig(self), nil)
	for _, tc := range []struct {
		name, fqdn string
		addr       netip.Addr
		want       error
	}{
		{"web", "web.weft.local.", mustAddr("10.32.0.1"), nil},
		{"Web.Weft.Local", "web.weft.local.", mustAddr("10.32.0.2"), nil},
		{"pod.ns.weft.local.", "pod.ns.weft.local.", mustAddr("10.32.0.3"), nil},
		{"v4in6", "v4in6.weft.local.", mustAddr("::ffff:10.32.0.4"), nil},
		{"web.example.com.", "", mustAddr("10.32.0.1"), ErrBadName},
		{"weft.local", "", mustAddr("10.32.0.1"), ErrBadName},
		{"bad name", "", mustAddr("10.32.0.1"), ErrBadName},
		{"", "", mustAddr("10.32.0.1"), ErrBadName},
		{"zero", "", netip.Addr{}, ErrBadAddr},
		{"unspec", "", mustAddr("0.0.0.0"), ErrBadAddr},
	} {
		err := s.Add(tc.name, tc.addr, "")
		if !errors.Is(err, tc.want) {
			t.Errorf("Add(%q, %s) = %v; want %v", tc.name, tc.addr, err, tc.want)
			continue
		}
		if err == nil && !slices.Contains(s.Lookup(tc.fqdn), tc.addr.Unmap()) {
			t.Errorf("Lookup(%q) = %v; want it to contain %s", tc.fqdn, s.Lookup(tc.fqdn), tc.addr)
		}
	}
	if err := s.Remove("nothing", netip.Addr{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Remove(nothing) = %v; want ErrNotFound", err)
	}
	if err := s.RemoveContainer("none"); err != nil {
		t.Errorf("RemoveContainer(none) = %v; want nil (idempotent)", err)
	}
}
