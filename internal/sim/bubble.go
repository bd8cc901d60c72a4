package sim

// Virtual time. Hundreds of complete peers on a few cores fall behind real
// time: timers fire late, memberlist's failure detector reads the CPU
// starvation as dead peers, and the repairs it starts add load. Run the
// cluster in a testing/synctest bubble instead (synctest.Test, with
// Options.Bubble set): the time package's
// clock there is virtual and advances only when every goroutine of the
// bubble is durably blocked (on a bubble's channel, timer, Sleep,
// WaitGroup or Cond), so however long the CPU takes, no timer fires
// before the work due earlier is done. The code and its timers are
// production's; only the clock is simulated.
//
// What it takes: no goroutine of a peer may block on anything else for
// long — a real socket (the API is off: daemon.Config.NoAPI; the datapath
// probe is off; the DNS server's binds of the fake bridge address fail and
// are retried on timers), or a sync.Mutex held across a wait for time to
// pass (the daemon's updateMeta uses a channel for that reason). If one
// does, virtual time stops and the run hangs until go test's -timeout
// dumps the goroutines.
//
// Inside the bubble time.Now is virtual: every duration a Cluster or Wait
// reports is protocol time. WallNow and CPU measure what the simulation
// costs.

import (
	"time"

	"golang.org/x/sys/unix"
)

// WallNow returns the real monotonic clock, which a bubble does not
// virtualise (time.Now there is virtual); subtract two readings.
func WallNow() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}
