package ipam_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/ipam"
	"github.com/weftmesh/weft/peer"
	"pgregory.net/rapid"
)

// TestClusterProperties runs random schedules of allocate, release,
// restart, crash + rmpeer (sometimes from two survivors at once), graceful
// leave (Handoff),
// partition and heal among 3-7 peers on a network that loses, duplicates
// and reorders broadcasts, and checks after every step that no address is
// allocated to two live IDs, and at the end that every peer converges to
// the same ring in which each allocation lies in its holder's space and
// no Merge was ever rejected.
func TestClusterProperties(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		n := rapid.IntRange(3, 7).Draw(rt, "peers")
		dir, err := os.MkdirTemp("", "ipam-prop")
		if err != nil {
			rt.Fatalf("mkdtemp: %v", err)
		}
		defer os.RemoveAll(dir)
		c := newCluster(rt, dir, n, "10.50.0.0/22", consensus(n), rapid.Uint64().Draw(rt, "netseed"))
		defer c.close()
		c.net.SetFaults(
			rapid.Float64Range(0, 0.3).Draw(rt, "loss"),
			rapid.Float64Range(0, 0.3).Draw(rt, "dup"),
			time.Duration(rapid.IntRange(0, 3).Draw(rt, "delay_ms"))*time.Millisecond)
		for _, id := range c.ids {
			c.start(id)
		}
		c.waitReady(15*time.Second, c.ids...)
		next := 0
		crashed := map[peer.ID]bool{}
		noRevive := map[peer.ID]bool{}

		livePick := func(rt *rapid.T, label string) peer.ID {
			live := c.live()
			if len(live) == 0 {
				rt.Skip("no live peer")
			}
			return rapid.SampledFrom(live).Draw(rt, label)
		}
		actions := map[string]func(*rapid.T){
			"allocate": func(rt *rapid.T) {
				id := livePick(rt, "peer")
				a := c.get(id)
				k := rapid.IntRange(1, 40).Draw(rt, "count")
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				defer cancel()
				for range k {
					next++
					_, err := a.Allocate(ctx, fmt.Sprintf("c%d", next))
					if err != nil && !errors.Is(err, ipam.ErrNoSpace) && !errors.Is(err, context.DeadlineExceeded) {
						rt.Fatalf("Allocate on %s = %v", id, err)
					}
					if err != nil {
						break
					}
				}
			},
			"release": func(rt *rapid.T) {
				a := c.get(livePick(rt, "peer"))
				al := a.Status().Allocations
				if len(al) == 0 {
					rt.Skip("nothing allocated")
				}
				for _, x := range al[:rapid.IntRange(1, len(al)).Draw(rt, "count")] {
					if err := a.Release(x.ID); err != nil {
						rt.Fatalf("Release(%q) = %v", x.ID, err)
					}
				}
			},
			"restart": func(rt *rapid.T) {
				id := livePick(rt, "peer")
				before := c.get(id).Status().Allocations
				c.stopPeer(id)
				after := c.start(id).Status().Allocations
				if !slices.Equal(before, after) {
					rt.Fatalf("restart of %s changed allocations:\n before %v\n after  %v", id, before, after)
				}
			},
			"crash": func(rt *rapid.T) {
				if len(c.live()) <= 2 {
					rt.Skip("keep a quorum")
				}
				id := livePick(rt, "peer")
				c.stopPeer(id)
				crashed[id] = true
			},
			"rmpeer": func(rt *rapid.T) {
				var cands []peer.ID
				for id := range crashed {
					cands = append(cands, id)
				}
				if len(cands) == 0 {
					rt.Skip("nobody crashed")
				}
				slices.Sort(cands)
				dead := rapid.SampledFrom(cands).Draw(rt, "dead")
				live := c.live()
				ways := rapid.IntRange(1, min(2, len(live))).Draw(rt, "concurrent")
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				defer cancel()
				var wg sync.WaitGroup
				errs := make([]error, ways)
				for i := range ways {
					wg.Go(func() { _, errs[i] = c.get(live[i]).Reclaim(ctx, dead) })
				}
				wg.Wait()
				wins := 0
				for _, err := range errs {
					if err == nil {
						wins++
					}
				}
				if wins > 1 {
					rt.Fatalf("%d concurrent reclaims of %s won", wins, dead)
				}
				if wins == 1 || slices.ContainsFunc(errs, func(e error) bool { return errors.Is(e, ipam.ErrNothingToReclaim) }) {
					delete(crashed, dead)
					c.mu.Lock()
					c.removed[dead] = true
					c.mu.Unlock()
					c.setPeers()
				}
			},
			"leave": func(rt *rapid.T) {
				if len(c.live()) <= 2 {
					rt.Skip("keep a quorum")
				}
				id := livePick(rt, "peer")
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				defer cancel()
				err := c.get(id).Handoff(ctx)
				if err != nil && !errors.Is(err, ipam.ErrNoPeer) {
					rt.Fatalf("Handoff on %s = %v", id, err)
				}
				c.stopPeer(id)
				if err != nil {
					// Nobody acknowledged: rmpeer it later, but never
					// restart it on the same data (weft reset wipes it).
					crashed[id], noRevive[id] = true, true
					return
				}
				c.mu.Lock()
				c.removed[id] = true
				c.mu.Unlock()
				c.setPeers()
			},
			"revive": func(rt *rapid.T) {
				var cands []peer.ID
				for id := range crashed {
					if !noRevive[id] {
						cands = append(cands, id)
					}
				}
				if len(cands) == 0 {
					rt.Skip("nobody to revive")
				}
				slices.Sort(cands)
				id := rapid.SampledFrom(cands).Draw(rt, "peer")
				delete(crashed, id)
				c.start(id)
			},
			"partition": func(rt *rapid.T) {
				live := c.live()
				side := rapid.SliceOfNDistinct(rapid.SampledFrom(live), 1, len(live)-1, rapid.ID).Draw(rt, "side")
				c.net.Partition(side)
				c.setPeers()
			},
			"heal": func(rt *rapid.T) {
				c.healAndConverge(15 * time.Second)
			},
			"": func(rt *rapid.T) {
				c.checkUnique()
			},
		}
		for name, f := range actions {
			actions[name] = func(rt *rapid.T) {
				start := time.Now()
				f(rt)
				if d := time.Since(start); d > 500*time.Millisecond && os.Getenv("IPAM_SLOW") != "" {
					fmt.Printf("slow step %s: %v\n", name, d)
				}
			}
		}
		rt.Repeat(actions)
		c.healAndConverge(15 * time.Second)
		c.checkUnique()
		for _, id := range c.live() {
			a := c.get(id)
			for _, al := range a.Status().Allocations {
				owned := false
				for _, p := range a.Ranges()[id] {
					owned = owned || p.Contains(al.Addr.Addr())
				}
				if !owned {
					rt.Fatalf("%s holds %s = %s outside its space", id, al.ID, al.Addr)
				}
			}
		}
		for _, err := range c.net.Rejected() {
			if !errors.Is(err, ipam.ErrClosed) {
				rt.Fatalf("a peer rejected a message: %v", err)
			}
		}
	})
}
