package sim

import (
	"context"
	"os"
	"strconv"
	"testing"
	"testing/synctest"
	"time"
)

// simPeers is the size of the simulator run in `go test` (make test):
// WEFT_SIM_PEERS overrides it; -short runs 30.
func simPeers(t *testing.T) int {
	if s := os.Getenv("WEFT_SIM_PEERS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 3 {
			t.Fatalf("WEFT_SIM_PEERS=%q: want a number ≥ 3", s)
		}
		return n
	}
	if testing.Short() {
		return 30
	}
	return 200
}

// TestSimulator: 200 complete peers (WEFT_SIM_PEERS) join at once; they
// must agree on membership, the ring and DNS, every peer gets a pod
// address through the CNI code path and no address is held twice; a crash
// is seen by all; a partition into halves and its heal end in agreement
// again with still no address held twice.
//
// It runs in a synctest bubble (bubble.go) with production's timers: the
// deadlines are virtual time, generous (minutes), and the process being
// slow cannot make a peer look dead. This checks behaviour; `make scale`
// measures time. Each step logs its virtual time, and the wall and CPU
// time the simulation took.
func TestSimulator(t *testing.T) {
	n := simPeers(t)
	synctest.Test(t, func(t *testing.T) {
		c := bubbleCluster(t)
		step := func(what string, limit time.Duration, cond func() error) {
			t.Helper()
			ctx, cancel := context.WithTimeout(context.Background(), limit)
			defer cancel()
			w0, cpu0 := WallNow(), CPU()
			took, err := Wait(ctx, cond)
			if err != nil {
				t.Fatalf("%s: %v (%s)", what, err, c.Progress())
			}
			t.Logf("%s: %v virtual (simulation: %.1f s wall, %.1f s CPU)", what, took.Round(10*time.Millisecond),
				(WallNow() - w0).Seconds(), (CPU() - cpu0).Seconds())
		}
		if err := c.Grow(n); err != nil {
			t.Fatal(err)
		}
		step("mass join: all agree", 5*time.Minute, c.Agree)

		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		pods, err := c.AllocatePods(ctx)
		cancel()
		if err != nil {
			t.Fatalf("allocate a pod on every peer: %v", err)
		}
		if len(pods) != n {
			t.Fatalf("%d pods allocated; want %d", len(pods), n)
		}
		step("pods: all agree", 2*time.Minute, c.Agree)
		if err := c.NoAddressTwice(pods); err != nil {
			t.Fatal(err)
		}

		victim := n / 3
		c.Kill(victim)
		step("kill: seen dead by all", 2*time.Minute, c.DeadSeen(victim))
		step("kill: all agree", 2*time.Minute, c.Agree)

		c.Partition(0.5)
		step("partition: each side sees the other dead", 2*time.Minute, func() error {
			// Nothing to agree on across the cut; wait until the halves notice.
			live := c.Live()
			a, b := live[0], live[len(live)-1]
			for _, info := range a.D.Mesh().Peers() {
				if info.Name == b.Name && info.State.Up() {
					return errString(a.Name + " still sees " + b.Name + " up")
				}
			}
			for _, info := range b.D.Mesh().Peers() {
				if info.Name == a.Name && info.State.Up() {
					return errString(b.Name + " still sees " + a.Name + " up")
				}
			}
			return nil
		})
		c.Heal()
		step("heal: all agree", 5*time.Minute, c.Agree)
		if err := c.NoAddressTwice(pods); err != nil {
			t.Fatal(err)
		}
	})
}

// bubbleCluster is a default Cluster for a test inside a synctest bubble
// (called there), closed when the test ends, inside the bubble.
func bubbleCluster(t *testing.T) *Cluster {
	t.Helper()
	opts := DefaultOptions()
	opts.Bubble = true
	c, err := NewCluster(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

type errString string

func (e errString) Error() string { return string(e) }
