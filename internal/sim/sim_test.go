package sim

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"
)

// simPeers is the size of the simulator run in `go test` (make test):
// WEFT_SIM_PEERS overrides it. The issue asks for 200; on this 2-core
// machine, shared with other test runs, 200 complete peers did not settle
// membership within minutes (false deaths under CPU starvation, see
// README), so make test runs 100 and WEFT_SIM_PEERS=200 is the target.
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
	return 100
}

// TestSimulator: 100 complete peers (WEFT_SIM_PEERS) join at once; they must agree on
// membership, the ring and DNS, every peer gets a pod address through the
// CNI code path and no address is held twice; a crash is seen by all; a
// partition into halves and its heal end in agreement again with still no
// address held twice. The deadlines are generous (minutes): this checks
// behaviour, `make scale` measures time.
func TestSimulator(t *testing.T) {
	n := simPeers(t)
	opts := DefaultOptions()
	opts.Memberlist = Relaxed
	c, err := NewCluster(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	step := func(what string, limit time.Duration, cond func() error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), limit)
		defer cancel()
		took, err := Wait(ctx, cond)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		t.Logf("%s: %v", what, took.Round(10*time.Millisecond))
	}
	if err := c.Grow(n); err != nil {
		t.Fatal(err)
	}
	step("mass join: all agree", 3*time.Minute, c.Agree)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	pods, err := c.AllocatePods(ctx)
	cancel()
	if err != nil {
		t.Fatalf("allocate a pod on every peer: %v", err)
	}
	step("pods: all agree", 2*time.Minute, c.Agree)
	if err := c.NoAddressTwice(pods); err != nil {
		t.Fatal(err)
	}

	victim := n / 3
	c.Kill(victim)
	step("kill: seen dead by all", 2*time.Minute, c.DeadSeen(victim))

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
		return nil
	})
	c.Heal()
	step("heal: all agree", 3*time.Minute, c.Agree)
	if err := c.NoAddressTwice(pods); err != nil {
		t.Fatal(err)
	}
}

type errString string

func (e errString) Error() string { return string(e) }
