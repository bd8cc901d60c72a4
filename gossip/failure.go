package gossip

// Failure detection: memberlist's SWIM with Lifeguard, tuned so that every
// peer learns of a failure within 10 s at any size up to several thousand
// peers, without trading away its protection against false positives.
//
// The time from a crash to "dead" at every peer is about
//
//	first probe of the dead peer   ≤ ~1 ProbeInterval (N-1 peers probe
//	                               round-robin: P(no one probes it in an
//	                               interval) ≈ 1/e)
//	+ the failed probe             1 ProbeInterval (direct, then indirect
//	                               through IndirectChecks peers)
//	+ suspicion timeout            SuspicionMult·max(1, log10 N)·ProbeInterval
//	                               once k = SuspicionMult-2 other peers
//	                               confirm; up to SuspicionMaxTimeoutMult
//	                               times that without confirmations
//	+ spreading "dead"             ~log N gossip rounds (GossipInterval)
//
// memberlist's LAN defaults (1 s probes, SuspicionMult 4) give a 12 s
// suspicion alone at 1,000 peers (4·3·1 s) and ~15 s in all: the 10-17 s
// measured on the 40-peer test bed. Halving the probe interval and taking
// SuspicionMult 3 makes the minimum suspicion 1.5·log10 N seconds (2.4 s at
// 40 peers, 4.5 s at 1,000, 5.5 s at 5,000) and the total ~7-9 s.
//
// What keeps false positives rare is Lifeguard, left on: a suspected peer
// learns of it from the next probe (suspicions ride on pings to it) and
// refutes with a higher incarnation long before 2.4 s; the suspicion
// timeout starts at SuspicionMaxTimeoutMult (3) times the minimum and falls
// to it only as independent peers confirm (k = 1 here), so one slow prober
// alone never kills a peer in the minimum time; and a peer that misses its
// own acks (a starved CPU) raises its awareness score and stretches its own
// probe timeouts, up to AwarenessMaxMultiplier (8) times, instead of
// accusing others. The probe timeout stays at half the interval (300 ms of
// 500 ms), ample for a LAN or a loaded in-process simulation. Twice the
// probes cost ~200 bytes/s per peer more, flat in N.
//
// Tests that shrink timers further set them in Config.Memberlist, which
// runs after this.

import (
	"time"

	"github.com/hashicorp/memberlist"
)

func tuneFailureDetection(c *memberlist.Config) {
	// No LZW compression: memberlist allocates a fresh LZW table for every
	// packet it compresses, which at hundreds of packets a second made
	// compression the largest CPU and garbage cost of a peer in the
	// simulator (and its GC pauses caused false suspicions). Gossip
	// packets are small; only push-pull would gain, and it is now rare.
	c.EnableCompression = false
	c.ProbeInterval = 500 * time.Millisecond
	c.ProbeTimeout = 300 * time.Millisecond
	c.SuspicionMult = 3
	c.SuspicionMaxTimeoutMult = 3
}
