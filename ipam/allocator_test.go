package ipam_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/ipam"
	"github.com/weftmesh/weft/peer"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func consensus(n int) ipam.Init { return ipam.Init{Mode: ipam.InitConsensus, Quorum: n} }

// checkRanges verifies that Ranges covers the whole range with disjoint
// CIDRs.
func checkRanges(t *testing.T, a *ipam.Allocator, rng netip.Prefix) {
	t.Helper()
	var total uint64
	var all []netip.Prefix
	for _, ps := range a.Ranges() {
		for _, p := range ps {
			if !rng.Contains(p.Addr()) || p.Bits() < rng.Bits() {
				t.Fatalf("Ranges has %s outside %s", p, rng)
			}
			for _, q := range all {
				if p.Overlaps(q) {
					t.Fatalf("Ranges has overlapping %s and %s", p, q)
				}
			}
			all = append(all, p)
			total += 1 << (32 - p.Bits())
		}
	}
	if want := uint64(1) << (32 - rng.Bits()); total != want {
		t.Fatalf("Ranges covers %d addresses; want %d", total, want)
	}
}

func TestBootstrapConsensus(t *testing.T) {
	for _, n := range []int{1, 3, 5} {
		t.Run(fmt.Sprintf("peers=%d", n), func(t *testing.T) {
			c := newCluster(t, t.TempDir(), n, "10.32.0.0/12", consensus(n), 1)
			defer c.close()
			for _, id := range c.ids {
				c.start(id)
			}
			c.waitReady(10*time.Second, c.ids...)
			c.healAndConverge(10 * time.Second)
			st := c.get(c.ids[0]).Status()
			if len(st.Owners) == 0 || len(st.Owners) > n {
				t.Fatalf("owners = %d; want 1..%d", len(st.Owners), n)
			}
			for _, id := range c.ids {
				checkRanges(t, c.get(id), c.rng)
			}
		})
	}
}

func TestBootstrapOneByOne(t *testing.T) {
	start := time.Now()
	c := newCluster(t, t.TempDir(), 3, "10.32.0.0/16", consensus(3), 2)
	defer c.close()
	a := c.start(c.ids[0])
	// Alone, it knows 1 of the quorum of 2 and must not form a ring.
	testutil.Eventually(t, 10*time.Second, "the lone peer to await consensus", func() error {
		if got, want := a.Status().Status, "awaiting consensus (known 1 of quorum 2)"; got != want {
			return fmt.Errorf("Status() = %q; want %q", got, want)
		}
		return nil
	})
	c.start(c.ids[1])
	c.waitReady(10*time.Second, c.ids[0], c.ids[1])
	// The third launch peer comes late: it must adopt the ring, not make one.
	late := c.start(c.ids[2])
	c.healAndConverge(10 * time.Second)
	if got := len(late.Status().Owners); got != 2 {
		t.Fatalf("late peer sees %d owners; want the 2 that formed the ring", got)
	}
	if ch := a.Status().Changed; ch.IsZero() || ch.Before(start) || ch.After(time.Now()) {
		t.Errorf("Status().Changed = %v after the ring formed; want a time since the test began (%v)", ch, start)
	}
	before := late.Status().Changed
	addr, err := late.Allocate(ctxT(t, 10*time.Second), "c1")
	if err != nil {
		t.Fatalf("Allocate on late peer = %v", err)
	}
	if st := late.Status(); st.Owned == 0 {
		t.Fatalf("late peer owns nothing after allocating %s", addr)
	} else if !st.Changed.After(before) {
		t.Errorf("Status().Changed = %v, not after %v: getting space changed the ring", st.Changed, before)
	}
	c.healAndConverge(10 * time.Second)
	c.checkUnique()
}

func TestBootstrapSeedAndObserver(t *testing.T) {
	c := newCluster(t, t.TempDir(), 3, "10.32.0.0/16", ipam.Init{Mode: ipam.InitSeed, Seeds: []string{"h0", "h1"}}, 3)
	defer c.close()
	for _, id := range c.ids {
		c.start(id)
	}
	c.waitReady(10*time.Second, c.ids...)
	c.healAndConverge(10 * time.Second)
	st := c.get(c.ids[2]).Status()
	if len(st.Owners) != 2 || st.Owned != 0 {
		t.Fatalf("non-seed peer: owners %d owned %d; want 2 owners, 0 owned", len(st.Owners), st.Owned)
	}

	o := newCluster(t, t.TempDir(), 1, "10.32.0.0/16", ipam.Init{Mode: ipam.InitObserver}, 4)
	defer o.close()
	a := o.start(o.ids[0])
	testutil.Eventually(t, 10*time.Second, "the observer to await a ring", func() error {
		if got := a.Status().Status; got != "awaiting ring (observer)" {
			return fmt.Errorf("observer Status() = %q", got)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := a.Allocate(ctx, "x"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("observer Allocate without ring = %v; want deadline exceeded", err)
	}
}

// TestObserverJoinsWithoutPushPull: an observer started next to a formed
// ring gets it by asking, with no anti-entropy round, and then gets space
// by donation.
func TestObserverJoinsWithoutPushPull(t *testing.T) {
	c := newCluster(t, t.TempDir(), 3, "10.32.0.0/16", consensus(2), 12)
	c.inits = map[peer.ID]ipam.Init{c.ids[2]: {Mode: ipam.InitObserver}}
	defer c.close()
	c.start(c.ids[0])
	c.start(c.ids[1])
	c.waitReadySync(10*time.Second, false, c.ids[0], c.ids[1])
	o := c.start(c.ids[2])
	c.waitReadySync(10*time.Second, false, c.ids[2])
	if st := o.Status(); st.Owned != 0 || len(st.Owners) != 2 {
		t.Fatalf("observer: owned %d, owners %d; want 0 and 2", st.Owned, len(st.Owners))
	}
	select {
	case <-o.Changed():
	default:
		t.Fatalf("Changed() not signalled when the observer got the ring")
	}
	p, err := o.Allocate(ctxT(t, 10*time.Second), "pod")
	if err != nil {
		t.Fatalf("observer Allocate = %v", err)
	}
	if r := o.Ranges()[c.ids[2]]; len(r) == 0 || !r[0].Contains(p.Addr()) {
		t.Fatalf("observer's ranges %v do not hold its address %v", r, p)
	}
	c.healAndConverge(10 * time.Second)
	c.checkUnique()
}

func TestAllocateReleaseRestart(t *testing.T) {
	dir := t.TempDir()
	c := newCluster(t, dir, 1, "10.32.0.0/12", consensus(1), 5)
	defer c.close()
	id := c.ids[0]
	a := c.start(id)
	ctx := ctxT(t, 10*time.Second)
	got := map[string]netip.Prefix{}
	for i := range 50 {
		cid := fmt.Sprintf("c%d", i)
		p, err := a.Allocate(ctx, cid)
		if err != nil {
			t.Fatalf("Allocate(%q) = %v", cid, err)
		}
		if p.Bits() != 12 || p.Addr() == netip.MustParseAddr("10.32.0.0") {
			t.Fatalf("Allocate(%q) = %v; want a host address with /12", cid, p)
		}
		if again, _ := a.Allocate(ctx, cid); again != p {
			t.Fatalf("Allocate(%q) again = %v; want %v", cid, again, p)
		}
		got[cid] = p
	}
	if _, err := a.Allocate(ctx, ""); !errors.Is(err, ipam.ErrEmptyID) {
		t.Fatalf("Allocate(\"\") = %v; want ErrEmptyID", err)
	}
	if _, err := a.Allocate(ctx, ipam.BridgeID); err != nil {
		t.Fatal(err)
	}
	got[ipam.BridgeID], _ = a.Lookup(ipam.BridgeID)
	if err := a.Release("c0"); err != nil {
		t.Fatalf("Release = %v", err)
	}
	if err := a.Release("c0"); err != nil {
		t.Fatalf("Release twice = %v", err)
	}
	delete(got, "c0")
	before := a.Status()

	c.stopPeer(id)
	a = c.start(id)
	after := a.Status()
	if diff := cmp.Diff(before.Allocations, after.Allocations, cmp.Comparer(func(x, y netip.Prefix) bool { return x == y })); diff != "" {
		t.Fatalf("allocations after restart (-before +after):\n%s", diff)
	}
	if before.Free != after.Free || before.Owned != after.Owned {
		t.Fatalf("free/owned after restart %d/%d; want %d/%d", after.Free, after.Owned, before.Free, before.Owned)
	}
	for cid, p := range got {
		if q, ok := a.Lookup(cid); !ok || q != p {
			t.Fatalf("Lookup(%q) after restart = %v, %v; want %v", cid, q, ok, p)
		}
	}
	gone, err := a.GC([]string{"c1", "c2"})
	if err != nil {
		t.Fatalf("GC = %v", err)
	}
	if len(gone) != 47 {
		t.Fatalf("GC released %d; want 47", len(gone))
	}
	if _, ok := a.Lookup(ipam.BridgeID); !ok {
		t.Fatalf("GC released the bridge address")
	}
	if st := a.Status(); st.Allocated != 3 {
		t.Fatalf("Allocated after GC = %d; want 3", st.Allocated)
	}
}

// TestNamedAllocations: a name given with an allocation is stored with it,
// survives a restart, and goes with its release.
func TestNamedAllocations(t *testing.T) {
	c := newCluster(t, t.TempDir(), 1, "10.32.0.0/12", consensus(1), 5)
	defer c.close()
	id := c.ids[0]
	a := c.start(id)
	ctx := ctxT(t, 10*time.Second)
	steps := []struct {
		id, name string
	}{
		{"c1", "p1.ns"},
		{"c2", ""},
		{"c2", "p2.ns"}, // an existing allocation takes a name
		{"c1", ""},      // and keeps it when asked again without one
		{"c3", "p3.ns"},
	}
	addrs := map[string]netip.Prefix{}
	for _, st := range steps {
		p, err := a.AllocateNamed(ctx, st.id, st.name)
		if err != nil {
			t.Fatalf("AllocateNamed(%q, %q) = %v", st.id, st.name, err)
		}
		if old, ok := addrs[st.id]; ok && old != p {
			t.Fatalf("AllocateNamed(%q, %q) = %v; want the same address %v", st.id, st.name, p, old)
		}
		addrs[st.id] = p
	}
	if _, err := a.AllocateNamed(ctx, "c4", strings.Repeat("x", 300)); err == nil {
		t.Errorf("AllocateNamed with a 300-byte name succeeded")
	}
	if err := a.Release("c3"); err != nil {
		t.Fatal(err)
	}
	want := []ipam.Allocation{{ID: "c1", Addr: addrs["c1"], Name: "p1.ns"}, {ID: "c2", Addr: addrs["c2"], Name: "p2.ns"}}
	cmpPrefix := cmp.Comparer(func(x, y netip.Prefix) bool { return x == y })
	if d := cmp.Diff(want, a.Allocations(), cmpPrefix); d != "" {
		t.Errorf("Allocations (-want +got):\n%s", d)
	}
	c.stopPeer(id)
	a = c.start(id)
	if d := cmp.Diff(want, a.Allocations(), cmpPrefix); d != "" {
		t.Errorf("Allocations after restart (-want +got):\n%s", d)
	}
}

func TestNoSpaceIsAnError(t *testing.T) {
	c := newCluster(t, t.TempDir(), 2, "10.40.0.0/28", consensus(2), 6)
	defer c.close()
	for _, id := range c.ids {
		c.start(id)
	}
	c.waitReady(10*time.Second, c.ids...)
	ctx := ctxT(t, 20*time.Second)
	var mu sync.Mutex
	seen := map[netip.Addr]bool{}
	// 16 addresses minus network and broadcast: 14 in all, spread over two
	// peers; the 15th allocation must fail with ErrNoSpace, not hang.
	n := 0
	for i := 0; ; i++ {
		a := c.get(c.ids[i%2])
		p, err := a.Allocate(ctx, fmt.Sprintf("c%d", i))
		if errors.Is(err, ipam.ErrNoSpace) {
			break
		}
		if err != nil {
			t.Fatalf("Allocate #%d = %v", i, err)
		}
		mu.Lock()
		if seen[p.Addr()] {
			t.Fatalf("address %s handed out twice", p)
		}
		seen[p.Addr()] = true
		mu.Unlock()
		n++
		if n > 14 {
			t.Fatalf("allocated %d addresses from a /28", n)
		}
	}
	// Donation may leave single free addresses that cannot be halved.
	if n < 12 {
		t.Fatalf("allocated %d of 14 before ErrNoSpace", n)
	}
	c.checkUnique()
}

func TestDonation(t *testing.T) {
	c := newCluster(t, t.TempDir(), 2, "10.40.0.0/24", consensus(2), 7)
	defer c.close()
	for _, id := range c.ids {
		c.start(id)
	}
	c.waitReady(10*time.Second, c.ids...)
	a := c.get(c.ids[0])
	ctx := ctxT(t, 20*time.Second)
	owned := a.Status().Owned
	drain := func() bool {
		select {
		case <-a.Changed():
			return true
		default:
			return false
		}
	}
	drain()
	gen := a.Gen()
	if _, err := a.Allocate(ctx, "c-first"); err != nil {
		t.Fatal(err)
	}
	if drain() {
		t.Fatalf("Changed() signalled by an allocation inside our own space")
	}
	if g := a.Gen(); g != gen {
		t.Fatalf("Gen moved from %d to %d by an allocation inside our own space", gen, g)
	}
	for i := range int(owned) + 20 {
		if _, err := a.Allocate(ctx, fmt.Sprintf("c%d", i)); err != nil {
			t.Fatalf("Allocate #%d = %v", i, err)
		}
	}
	if st := a.Status(); st.Owned <= owned {
		t.Fatalf("owned %d after exhausting %d; want more by donation", st.Owned, owned)
	}
	if !drain() {
		t.Fatalf("Changed() not signalled by a donation")
	}
	if g := a.Gen(); g == gen {
		t.Fatalf("Gen still %d after a donation", g)
	}
	c.healAndConverge(10 * time.Second)
	c.checkUnique()
}

func TestReclaim(t *testing.T) {
	c := newCluster(t, t.TempDir(), 3, "10.32.0.0/16", consensus(3), 8)
	defer c.close()
	for _, id := range c.ids {
		c.start(id)
	}
	c.waitReady(10*time.Second, c.ids...)
	c.healAndConverge(10 * time.Second)
	a, dead := c.get(c.ids[0]), c.ownerOtherThan(c.ids[0])
	ctx := ctxT(t, 20*time.Second)
	if _, err := a.Reclaim(ctx, dead); !errors.Is(err, ipam.ErrPeerAlive) {
		t.Fatalf("Reclaim(alive) = %v; want ErrPeerAlive", err)
	}
	if _, err := a.Reclaim(ctx, c.ids[0]); !errors.Is(err, ipam.ErrSelf) {
		t.Fatalf("Reclaim(self) = %v; want ErrSelf", err)
	}
	deadOwned := int64(0)
	for _, o := range a.Status().Owners {
		if o.ID == dead {
			deadOwned = o.Owned
		}
	}
	c.stopPeer(dead)
	n, err := a.Reclaim(ctx, dead)
	if err != nil || n != deadOwned {
		t.Fatalf("Reclaim(dead) = %d, %v; want %d, nil", n, err, deadOwned)
	}
	if _, err := a.Reclaim(ctx, dead); !errors.Is(err, ipam.ErrNothingToReclaim) {
		t.Fatalf("second Reclaim = %v; want ErrNothingToReclaim", err)
	}
	c.healAndConverge(10 * time.Second)
	for _, o := range c.get(c.live()[1]).Status().Owners {
		if o.ID == dead {
			t.Fatalf("dead peer still owns %d after reclaim", o.Owned)
		}
	}
}

func TestReclaimConcurrent(t *testing.T) {
	for round := range 3 {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			c := newCluster(t, t.TempDir(), 4, "10.32.0.0/16", consensus(4), uint64(10+round))
			defer c.close()
			for _, id := range c.ids {
				c.start(id)
			}
			c.waitReady(10*time.Second, c.ids...)
			c.healAndConverge(10 * time.Second)
			dead := c.ownerOtherThan(c.ids[0])
			c.stopPeer(dead)
			rec := c.live()
			ctx := ctxT(t, 20*time.Second)
			var wg sync.WaitGroup
			res := make([]error, 2)
			ns := make([]int64, 2)
			for i := range 2 {
				wg.Go(func() { ns[i], res[i] = c.get(rec[i]).Reclaim(ctx, dead) })
			}
			wg.Wait()
			wins := 0
			for i, err := range res {
				switch {
				case err == nil && ns[i] > 0:
					wins++
				case errors.Is(err, ipam.ErrReclaimedByOther), errors.Is(err, ipam.ErrNothingToReclaim):
				default:
					t.Fatalf("Reclaim on %s = %d, %v", rec[i], ns[i], err)
				}
			}
			if wins != 1 {
				t.Fatalf("%d reclaims won (%v); want exactly 1", wins, res)
			}
			c.healAndConverge(10 * time.Second)
			// Both survivors allocate heavily; no address may repeat.
			for i := range 200 {
				if _, err := c.get(rec[i%3]).Allocate(ctx, fmt.Sprintf("c%d", i)); err != nil {
					t.Fatalf("Allocate = %v", err)
				}
			}
			c.checkUnique()
		})
	}
}

func TestHandoff(t *testing.T) {
	c := newCluster(t, t.TempDir(), 2, "10.32.0.0/16", consensus(2), 9)
	defer c.close()
	for _, id := range c.ids {
		c.start(id)
	}
	c.waitReady(10*time.Second, c.ids...)
	a, b := c.get(c.ids[0]), c.get(c.ids[1])
	ctx := ctxT(t, 10*time.Second)
	if _, err := a.Allocate(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	if err := a.Handoff(ctx); err != nil {
		t.Fatalf("Handoff = %v", err)
	}
	if _, err := a.Allocate(ctx, "y"); !errors.Is(err, ipam.ErrLeaving) {
		t.Fatalf("Allocate after Handoff = %v; want ErrLeaving", err)
	}
	eventually(t, 5*time.Second, "b owns everything", func() bool {
		return b.Status().Owned == 1<<16 && a.Status().Owned == 0
	})
	if st := a.Status(); st.Allocated != 0 {
		t.Fatalf("leaving peer still has %d allocations", st.Allocated)
	}
	// A restart on the same data (no reset) stays handed off.
	c.stopPeer(c.ids[0])
	a = c.start(c.ids[0])
	if _, err := a.Allocate(ctx, "z"); !errors.Is(err, ipam.ErrLeaving) {
		t.Fatalf("Allocate after Handoff and restart = %v; want ErrLeaving", err)
	}
	c.healAndConverge(10 * time.Second)
	if errs := c.net.Rejected(); len(errs) != 0 {
		t.Fatalf("rejected after handoff: %v", errs)
	}
}

// A handoff to a live peer whose ring is not ready yet (it has just
// joined) is retried until it is, not given up at the first refusal.
func TestHandoffWaitsForReadyPeer(t *testing.T) {
	c := newCluster(t, t.TempDir(), 2, "10.32.0.0/16", consensus(1), 11)
	defer c.close()
	aID, bID := c.ids[0], c.ids[1]
	c.inits = map[peer.ID]ipam.Init{bID: {Mode: ipam.InitObserver}}
	a := c.start(aID)
	c.waitReadySync(10*time.Second, false, aID)
	b := c.start(bID) // alive for a; an observer, it asks for the ring
	if st := b.Status().Status; st == "ready" {
		t.Fatalf("b is %s at once; the test needs it not ready yet", st)
	}
	if err := a.Handoff(ctxT(t, 30*time.Second)); err != nil {
		t.Fatalf("Handoff = %v; want it to wait for b's ring", err)
	}
	eventually(t, 10*time.Second, "b owns everything", func() bool {
		return b.Status().Owned == 1<<16 && a.Status().Owned == 0
	})
}

func TestParseInit(t *testing.T) {
	tests := []struct {
		in   string
		want ipam.Init
		err  bool
	}{
		{"consensus=3", ipam.Init{Mode: ipam.InitConsensus, Quorum: 3}, false},
		{"seed=a,b", ipam.Init{Mode: ipam.InitSeed, Seeds: []string{"a", "b"}}, false},
		{"observer", ipam.Init{Mode: ipam.InitObserver}, false},
		{"consensus=0", ipam.Init{}, true},
		{"seed=", ipam.Init{}, true},
		{"paxos", ipam.Init{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ipam.ParseInit(tt.in)
			if (err != nil) != tt.err {
				t.Fatalf("ParseInit(%q) error = %v; want error %v", tt.in, err, tt.err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Fatalf("ParseInit(%q) (-want +got):\n%s", tt.in, diff)
			}
			if !tt.err && got.String() != tt.in {
				t.Fatalf("String() = %q; want %q", got.String(), tt.in)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	base := ipam.DefaultConfig()
	base.Self = 1
	tests := []struct {
		name string
		mod  func(*ipam.Config)
		ok   bool
	}{
		{"default", func(*ipam.Config) {}, true},
		{"zero self", func(c *ipam.Config) { c.Self = 0 }, false},
		{"ipv6", func(c *ipam.Config) { c.Range = netip.MustParsePrefix("fd00::/64") }, false},
		{"host bits", func(c *ipam.Config) { c.Range = netip.MustParsePrefix("10.32.0.1/12") }, false},
		{"too small", func(c *ipam.Config) { c.Range = netip.MustParsePrefix("10.32.0.0/31") }, false},
		{"no db", func(c *ipam.Config) { c.DBPath = "" }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			tt.mod(&c)
			if err := c.Validate(); (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v; want ok %v", err, tt.ok)
			}
		})
	}
}
