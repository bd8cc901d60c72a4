package wg

// Runtime and device tuning of the datapath process, each measured with
// scripts/bench-wg.sh on the shared 2-core test machine (UDP 1 Gbit/s
// offered, 4 MB receive buffer, iperf3 through the tunnel):
//
//   - Read batching (batch.go) is the change that matters: received UDP
//     rate ~2x stock wireguard-go at 0.5 and 1 Gbit/s offered, loss at
//     0.5 Gbit/s from 35-50 % to 0.5-2 % (medians of two runs).
//   - TUN transmit queue 5000 instead of the kernel's 500. The remaining
//     loss at 1 Gbit/s is mostly the TUN ring overflowing (tx_dropped on the
//     sender's TUN) while the datapath is descheduled: 500 packets are ~6 ms
//     at 1 Gbit/s. TCP does not fill the ring (TCP small queues; a TSO
//     super-packet is one entry), so it only absorbs bursts; under
//     sustained overload it adds at most ~55 ms of queue at 1 Gbit/s.
//   - GC: left alone. With GODEBUG=gctrace=1 a datapath carrying 1 Gbit/s
//     runs ~6 collections in its life, all while its buffer pools warm up.
//   - Memory: a soft limit (memoryLimit). wireguard-go's buffer pools and
//     queues (64 KiB elements, 1024-deep queues) let the heap of a datapath
//     carrying iperf3 traffic grow to 430-480 MB RSS in 8 s, and with the
//     GC left at GOGC=100 nothing gives it back. With the limit the GC
//     starts earlier and empties the sync.Pools. At 128 MiB: 96-108 MB RSS
//     after the same 8 s, but on a quiet machine TCP x4 fell to 0.66x stock
//     wireguard-go (0.96x with no limit, 0.91x at 256 MiB; 2-3 rounds each,
//     scripts/bench-datapath.sh): 256 MiB is the compromise.
//   - GOMAXPROCS: left at the number of CPUs. GOMAXPROCS=1 lost 30-50 % of
//     the UDP rate (crypto no longer runs in parallel with the TUN reader).

import (
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"

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

// memoryLimit is the datapath's soft memory limit (bytes) unless the
// environment sets GOMEMLIMIT.
const memoryLimit = 256 << 20

// tuneRuntime adjusts the Go runtime of the datapath process; see above.
func tuneRuntime(logger *slog.Logger) {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
	logger.Debug("runtime tuning", "memory_limit", debug.SetMemoryLimit(-1))
}
