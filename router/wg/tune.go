package wg

// Runtime and device tuning of the datapath process, each measured with
// scripts/bench-wg.sh on the 2-core test machine (numbers in the report of
// the change that introduced them):
//
//   - TUN transmit queue 5000 instead of the kernel's 500. The kernel drops
//     at the TUN's ring (tx_dropped) whenever the datapath is descheduled for
//     more than ~5 ms at 1 Gbit/s, which is most of the UDP loss at 1 Gbit/s
//     offered on a busy machine. TCP does not fill it (TCP small queues,
//     and TSO super-packets count once), so it only absorbs bursts; under
//     sustained overload it adds at most ~55 ms of queue at 1 Gbit/s.
//   - GC: left alone. With GODEBUG=gctrace=1 a datapath carrying 1 Gbit/s
//     runs ~6 collections in its life, all while its buffer pools warm up;
//     debug.SetGCPercent cannot win anything measurable.
//   - Read batching (batch.go) is the change that matters for UDP.

import (
	"fmt"
	"log/slog"

	"github.com/vishvananda/netlink"
)

// tunTxQueueLen is the transmit queue length, in packets, of our TUN.
const tunTxQueueLen = 5000

// setTxQueueLen sets the transmit queue length of link name.
func setTxQueueLen(name string, qlen int) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("txqueuelen %s: %w", name, err)
	}
	if err := netlink.LinkSetTxQLen(link, qlen); err != nil {
		return fmt.Errorf("txqueuelen %s: %w", name, err)
	}
	return nil
}

// tuneRuntime adjusts the Go runtime of the datapath process; see above.
func tuneRuntime(logger *slog.Logger) {
	logger.Debug("runtime tuning: Go defaults (GC measured negligible)")
}
