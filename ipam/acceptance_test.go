package ipam_test

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/ipam"
	"github.com/weftmesh/weft/peer"
)

// TestConcurrentAllocations mirrors acceptance 2 in memory: 300
// allocations spread over 3 peers concurrently are unique and in range; a
// 4th peer joining later gets space by donation and allocates.
func TestConcurrentAllocations(t *testing.T) {
	c := newCluster(t, t.TempDir(), 4, "10.32.0.0/12", consensus(3), 20)
	defer c.close()
	c.net.SetFaults(0.1, 0.1, time.Millisecond)
	for _, id := range c.ids[:3] {
		c.start(id)
	}
	c.waitReady(10*time.Second, c.ids[:3]...)
	ctx := ctxT(t, 30*time.Second)
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := map[netip.Addr]string{}
	for w := range 30 {
		wg.Go(func() {
			for i := range 10 {
				id := fmt.Sprintf("w%d-%d", w, i)
				p, err := c.get(c.ids[w%3]).Allocate(ctx, id)
				if err != nil {
					t.Errorf("Allocate(%q) = %v", id, err)
					return
				}
				mu.Lock()
				if prev, dup := got[p.Addr()]; dup {
					t.Errorf("%s given to %q and %q", p, prev, id)
				}
				got[p.Addr()] = id
				mu.Unlock()
				if !c.rng.Contains(p.Addr()) {
					t.Errorf("Allocate(%q) = %s outside %s", id, p, c.rng)
				}
			}
		})
	}
	wg.Wait()
	if len(got) != 300 {
		t.Fatalf("%d distinct addresses; want 300", len(got))
	}
	late := c.start(c.ids[3])
	c.waitReady(10*time.Second, c.ids[3])
	if _, err := late.Allocate(ctx, "late"); err != nil {
		t.Fatalf("late peer Allocate = %v", err)
	}
	if late.Status().Owned == 0 {
		t.Fatalf("late peer got no space")
	}
	c.healAndConverge(10 * time.Second)
	c.checkUnique()
}

// TestPartitionHeal mirrors acceptance 3: one peer cut off; both sides
// keep allocating from their own space; after heal, no duplicates and equal
// rings.
func TestPartitionHeal(t *testing.T) {
	c := newCluster(t, t.TempDir(), 3, "10.32.0.0/20", consensus(3), 21)
	defer c.close()
	for _, id := range c.ids {
		c.startQuiet(id)
	}
	c.setPeers()
	c.waitReady(10*time.Second, c.ids...)
	c.healAndConverge(10 * time.Second)
	c.net.Partition(c.ids[:1])
	c.setPeers()
	ctx := ctxT(t, 30*time.Second)
	for i := range 120 {
		id := c.ids[i%3]
		if _, err := c.get(id).Allocate(ctx, fmt.Sprintf("p%d", i)); err != nil {
			t.Fatalf("Allocate on %s during partition = %v", id, err)
		}
	}
	c.checkUnique()
	c.healAndConverge(10 * time.Second)
	c.checkUnique()
	if errs := c.net.Rejected(); len(errs) != 0 {
		t.Fatalf("messages rejected: %v", errs)
	}
}

// TestReclaimRefusedWithoutMajority: with one of five peers dead and the
// other four split 2|2, neither side may reclaim its space (each sees only
// 2 of an electorate of 4); after heal, one reclaim succeeds.
func TestReclaimRefusedWithoutMajority(t *testing.T) {
	c := newCluster(t, t.TempDir(), 5, "10.32.0.0/16", consensus(5), 22)
	defer c.close()
	for _, id := range c.ids {
		c.startQuiet(id)
	}
	c.setPeers()
	c.waitReady(10*time.Second, c.ids...)
	c.healAndConverge(10 * time.Second)
	dead := c.ownerOtherThan()
	c.stopPeer(dead)
	var rest []peer.ID
	for _, id := range c.ids {
		if id != dead {
			rest = append(rest, id)
		}
	}
	c.net.Partition(rest[:2])
	c.setPeers()
	ctx := ctxT(t, 10*time.Second)
	for _, id := range []peer.ID{rest[0], rest[2]} {
		if n, err := c.get(id).Reclaim(ctx, dead); !errors.Is(err, ipam.ErrNoQuorum) {
			t.Fatalf("Reclaim from %s during a 2|2 split = %d, %v; want ErrNoQuorum", id, n, err)
		}
	}
	c.healAndConverge(10 * time.Second)
	if n, err := c.get(rest[1]).Reclaim(ctx, dead); err != nil || n == 0 {
		t.Fatalf("Reclaim after heal = %d, %v", n, err)
	}
	c.healAndConverge(10 * time.Second)
}
