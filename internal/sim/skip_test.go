package sim

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

// TestIdlePassesSkipped: at rest, a peer's sync loop skips its ticker's
// passes (nothing they read changed) but for one full pass every 10 s;
// and after that rest a joiner is still agreed on and its range routed by
// every peer: skipping never stands between a change and the datapath.
// (Which tick may be skipped is TestPassDue's, in daemon/.)
func TestIdlePassesSkipped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := bubbleCluster(t)
		wait := func(what string, cond func() error) {
			t.Helper()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			if _, err := Wait(ctx, cond); err != nil {
				t.Fatalf("%s: %v (%s)", what, err, c.Progress())
			}
		}
		if err := c.Grow(6); err != nil {
			t.Fatal(err)
		}
		wait("join: all agree", c.Agree)
		wait("join: routes follow the ring", c.RoutesFollowRing)
		time.Sleep(30 * time.Second) // the join's tail

		counters := func() (skipped, runs []float64) {
			for _, p := range c.Live() {
				m := p.D.Counters()
				skipped = append(skipped, m["sync_skipped_total"])
				runs = append(runs, m["reconcile_runs_total"])
			}
			return skipped, runs
		}
		s0, r0 := counters()
		const rest = time.Minute
		time.Sleep(rest)
		s1, r1 := counters()
		// 30 ticks in the minute, of which 6 are full passes; a peer's
		// metadata refresh or a probe's report may wake a few more.
		for i, p := range c.Live() {
			skipped, runs := s1[i]-s0[i], r1[i]-r0[i]
			t.Logf("%s at rest for %v: %.0f passes skipped, %.0f run", p.Name, rest, skipped, runs)
			if skipped < 15 {
				t.Errorf("%s skipped %.0f passes in %v at rest; want ≥ 15 of 30", p.Name, skipped, rest)
			}
			if runs > 15 {
				t.Errorf("%s ran %.0f passes in %v at rest; want ≤ 15", p.Name, runs, rest)
			}
		}

		if err := c.Grow(1); err != nil {
			t.Fatal(err)
		}
		wait("a joiner after the rest: all agree", c.Agree)
		wait("a joiner after the rest: routes follow the ring", c.RoutesFollowRing)
	})
}
