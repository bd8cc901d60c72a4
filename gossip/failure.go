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
// measured on the 40-peer test bed. Halving the probe interval makes the
// minimum suspicion SuspicionMult·log10 N·0.5 s: with SuspicionMult 4,
// 3.2 s at 40 peers, 6 s at 1,000, 7.4 s at 5,000, and the total ~5 s at
// 40 (measured 4.4-5.5 s), ~8 s at 1,000 and ~9.5 s at 5,000.
//
// SuspicionMult was 3 (2.4 s at 40 peers, k = 1 confirmation) and the
// probe timeout 300 ms until 40 real peers started at once on two cores
// (make scale-real) showed what that cost: peers starved of CPU for a
// couple of seconds missed acks ("UDP probes failed") and were declared
// dead by everyone before their refutation got through, 6 to 153 "peer
// dead" events a start (39 about one peer), each refuted, each a round
// of route and relay churn. With 4 and 400 ms: 0 and 1 in the same runs
// (4 alternating runs), and the ring agreed no later. The price is ~1 s
// more from a crash to "dead" at 40 peers and ~1.5 s at 1,000.
//
// What keeps false positives rare is Lifeguard, left on: a suspected peer
// learns of it from the next probe (suspicions ride on pings to it) and
// refutes with a higher incarnation long before 3.2 s; the suspicion
// timeout starts at SuspicionMaxTimeoutMult (3) times the minimum and falls
// to it only as independent peers confirm (k = SuspicionMult-2 = 2 here),
// so slow probers alone never kill a peer in the minimum time; and a peer
// that misses its own acks (a starved CPU) raises its awareness score and
// stretches its own probe timeouts, up to AwarenessMaxMultiplier (8)
// times, instead of accusing others. The probe timeout is 400 ms of the
// 500 ms interval: a LAN answers in well under a millisecond, and the
// margin is for a loaded host. Twice the probes cost ~200 bytes/s per peer
// more, flat in N.
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
	c.ProbeTimeout = 400 * time.Millisecond
	c.SuspicionMult = 4
	c.SuspicionMaxTimeoutMult = 3
}
