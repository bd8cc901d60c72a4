// Command scale runs the scale simulator (internal/sim) for each mesh size
// given and writes, into -out, results.json, a Markdown table (table.md)
// and an SVG plot (scale.svg) of convergence time, idle bytes per peer per
// second and CPU against N.
//
// `make scale` runs it in virtual time: TestScale (scale_test.go) runs each
// size in a testing/synctest bubble (internal/sim/bubble.go), so the
// protocol's timings do not depend on how fast this machine simulates
// hundreds of peers; the table gives the protocol's (virtual) times and,
// apart, the wall and CPU time each simulation cost.
//
//	WEFT_SCALE=1 go test -run '^TestScale$' -timeout 0 ./internal/sim/cmd/scale -args -n 200,1000 -out $PWD/results/scale
//
// The command itself runs in real time, where the times include the
// simulation falling behind (a few hundred peers on two cores at most):
//
//	go run ./internal/sim/cmd/scale -n 50,100 -out results/scale
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/weftmesh/weft/internal/sim"
)

// Result is one mesh size's measurements. In virtual time (Clock
// "virtual") the durations and rates are per virtual second: what the
// protocol takes; WallS and CPUS are what simulating it cost.
type Result struct {
	Peers         int     `json:"peers"`
	Clock         string  `json:"clock"`             // "virtual" (synctest bubble) or "real"
	WallS         float64 `json:"wall_s"`            // real time the whole run for this size took
	CPUS          float64 `json:"cpu_s"`             // process CPU time the whole run took
	JoinWallS     float64 `json:"join_wall_s"`       // real time until the mass join agreed
	MembersS      float64 `json:"members_agree_s"`   // mass join: all see all alive
	RingS         float64 `json:"ring_agree_s"`      // mass join: all hold the same complete ring
	AgreeS        float64 `json:"all_agree_s"`       // + every peer has its address, DNS agrees
	JoinRingS     float64 `json:"join_ring_s"`       // one more peer: until it holds the agreed ring
	KillSeenS     float64 `json:"kill_seen_s"`       // a crash: until all see it dead
	SettleS       float64 `json:"settle_s"`          // after agreement: until the join's relay backlog drained
	IdleBytesPerS float64 `json:"idle_bytes_peer_s"` // sent+received per peer per second, idle
	// IdleStreamBytesPerS is the part of IdleBytesPerS on streams (TCP:
	// push-pulls); the member syncs and repairs are per peer per minute.
	IdleStreamBytesPerS   float64 `json:"idle_stream_bytes_peer_s"`
	IdleMemberSyncsPerMin float64 `json:"idle_member_syncs_peer_min"`
	IdleRepairsPerMin     float64 `json:"idle_repairs_peer_min"`
	IdleCPUPerPeer        float64 `json:"idle_cpu_peer"` // CPU seconds per peer per (virtual) second, idle
	JoinCPUPerPeer        float64 `json:"join_cpu_peer"` // CPU seconds per peer to converge the mass join
	// What each peer did in the mass join, until agreement: streams dialed
	// (memberlist's TCP), membership push-pulls and channel repairs started
	// by anti-entropy.
	JoinDialsPerPeer       float64 `json:"join_dials_peer,omitempty"`
	JoinMemberSyncsPerPeer float64 `json:"join_member_syncs_peer,omitempty"`
	JoinRepairsPerPeer     float64 `json:"join_repairs_peer,omitempty"`
	// What one event cost the whole mesh until it was measured: membership
	// push-pulls started by anti-entropy (each moves both full views) and
	// bytes on streams, for the joiner (until all list it alive) and the
	// kill (until all list it dead).
	JoinerMemberSyncs uint64  `json:"joiner_member_syncs,omitempty"`
	JoinerStreamBytes uint64  `json:"joiner_stream_bytes,omitempty"`
	KillMemberSyncs   uint64  `json:"kill_member_syncs,omitempty"`
	KillStreamBytes   uint64  `json:"kill_stream_bytes,omitempty"`
	HeapMiB           float64 `json:"heap_mib_per_peer"` // Go heap in use per peer, idle
	// LiveMiB is the live heap per peer at the idle point (after a GC);
	// PeakLiveMiB the largest live heap (as of each GC) per peer, sampled
	// every second of real time through the whole size; PeakRSSMiB the
	// process's resident high-water mark for the size, in all (not per
	// peer): what the machine must hold.
	LiveMiB     float64 `json:"live_mib_per_peer,omitempty"`
	PeakLiveMiB float64 `json:"peak_live_mib_per_peer,omitempty"`
	PeakRSSMiB  float64 `json:"peak_rss_mib,omitempty"`
	Secure      bool    `json:"secure"`
	// JoinOnly says only the mass join was measured (-join-only): the
	// columns after it are not zero, they were not run.
	JoinOnly bool `json:"join_only,omitempty"`
	// NoIdle says the joiner and the kill were measured right after the
	// join, in its backlog, and the backlog and idle window were not run
	// (-no-idle).
	NoIdle bool   `json:"no_idle,omitempty"`
	Error  string `json:"error,omitempty"`
}

var (
	sizes     = flag.String("n", "100,200,500,1000", "comma-separated mesh sizes")
	out       = flag.String("out", "results/scale", "output directory")
	secure    = flag.Bool("secure", false, "a cluster secret (encrypted gossip, WireGuard)")
	consensus = flag.Bool("consensus", false, "every peer may divide the ring (the default bootstrap), not only the first: can divide two rings in a mass start")
	idle      = flag.Duration("idle", 20*time.Second, "idle window for bytes and CPU")
	limit     = flag.Duration("limit", 10*time.Minute, "give up on a convergence after this")
	trace     = flag.Bool("trace", false, "log the progress of each convergence every second")
	cpuprof   = flag.String("cpuprofile", "", "write a CPU profile of the whole run here")
	keep      = flag.Bool("keep", false, "keep the other sizes' rows of -out/results.json (a size run again is replaced)")
	memprof   = flag.String("memprofile", "", "write an allocation profile at the end here")
	heapprof  = flag.String("heapprofile", "", "write a heap profile at each size's idle point here (.N appended) and at its peak (.N.peak)")
)

func main() {
	flag.Parse()
	runAll(nil)
}

// runAll measures every size of -n and writes the results after each. With
// a nil bubble each size runs in real time; otherwise bubble runs it (in a
// synctest bubble, virtual time).
func runAll(bubble func(func())) {
	if *memprof != "" {
		defer func() {
			if f, err := os.Create(*memprof); err == nil {
				pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
		}()
	}
	if *cpuprof != "" {
		f, err := os.Create(*cpuprof)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		log.Fatal(err)
	}
	*dumpDir = *out
	var results []Result
	if *keep {
		// A 1,000-peer size takes a quarter of an hour here: sizes can be
		// run one at a time into the same table.
		if b, err := os.ReadFile(filepath.Join(*out, "results.json")); err == nil {
			if err := json.Unmarshal(b, &results); err != nil {
				log.Fatalf("-keep: %s/results.json: %v", *out, err)
			}
		}
	}
	for _, s := range strings.Split(*sizes, ",") {
		if strings.TrimSpace(s) == "" {
			continue // -n "" with -keep: only rewrite the table and plot
		}
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 2 {
			log.Printf("-n %q: want sizes ≥ 2", s)
			return
		}
		results = slices.DeleteFunc(results, func(r Result) bool { return r.Peers == n })
		var r Result
		w0, cpu0 := sim.WallNow(), sim.CPU()
		var peakProfile string
		if *heapprof != "" {
			peakProfile = fmt.Sprintf("%s.%d.peak", *heapprof, n)
		}
		mem := watchMemory(peakProfile) // outside the bubble: real time
		if bubble == nil {
			r = run(n, *secure, *trace, *idle, *limit, false)
		} else {
			bubble(func() { r = run(n, *secure, *trace, *idle, *limit, true) })
		}
		r.WallS, r.CPUS = secs(sim.WallNow()-w0), secs(sim.CPU()-cpu0)
		peakLive, peakRSS := mem.stop()
		r.PeakLiveMiB, r.PeakRSSMiB = peakLive/float64(1<<20)/float64(n), peakRSS/float64(1<<20)
		log.Printf("%+v", r)
		results = append(results, r)
		slices.SortStableFunc(results, func(a, b Result) int { return a.Peers - b.Peers })
		if err := write(*out, results); err != nil {
			log.Print(err)
			return
		}
		runtime.GC()
	}
	if err := write(*out, results); err != nil {
		log.Print(err)
	}
}

// dumpDir receives a goroutine dump when a convergence times out.
var dumpDir = new(string)

// relaxed is -relaxed: sim.Relaxed failure detection.
var (
	relaxed     = flag.Bool("relaxed", false, "relaxed failure-detection timers (sim.Relaxed)")
	launchEvery = flag.Duration("launch-every", 0, "space the mass join's launches by this much (0: all at one instant)")
	joinOnly    = flag.Bool("join-only", false, "measure the mass join only, not the backlog, idle window, joiner and kill after it (hours at 2,000 peers here)")
	noIdle      = flag.Bool("no-idle", false, "after the mass join, measure the joiner and the kill at once, in the join's backlog, and not the backlog or idle window (hours at 2,000 peers here)")
)

func secs(d time.Duration) float64 { return float64(d.Milliseconds()) / 1000 }

func run(n int, secure, trace bool, idle, limit time.Duration, virtual bool) (r Result) {
	r = Result{Peers: n, Secure: secure, Clock: "real"}
	if virtual {
		r.Clock = "virtual"
	}
	opts := sim.DefaultOptions()
	opts.Secure = secure
	opts.Consensus = *consensus
	opts.Bubble = virtual
	opts.LaunchEvery = *launchEvery
	if *relaxed {
		opts.Memberlist = sim.Relaxed
	}
	c, err := sim.NewCluster(opts)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	defer c.Close()
	wait := func(cond func() error) (float64, bool) {
		ctx, cancel := context.WithTimeout(context.Background(), limit)
		defer cancel()
		d, err := sim.Wait(ctx, cond)
		if err != nil {
			r.Error = err.Error()
			log.Printf("%d peers: %v; %s; %s", n, err, c.Progress(), c.Rings())
			if i := strings.Index(r.Error, "sees p"); i >= 0 {
				if k, err := strconv.Atoi(r.Error[i+6 : i+10]); err == nil {
					log.Print(c.Explain(k))
				}
			}
			if *dumpDir != "" {
				if f, err := os.Create(filepath.Join(*dumpDir, fmt.Sprintf("goroutines-%d.txt", n))); err == nil {
					pprof.Lookup("goroutine").WriteTo(f, 2)
					f.Close()
				}
			}
			return secs(d), false
		}
		return secs(d), true
	}
	cpu0, t0, w0 := sim.CPU(), time.Now(), sim.WallNow()
	if err := c.Grow(n); err != nil {
		r.Error = err.Error()
		return r
	}
	if trace {
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(time.Second):
					dog := time.AfterFunc(3*time.Second, func() {
						if f, err := os.Create("/tmp/scale-stall.txt"); err == nil {
							pprof.Lookup("goroutine").WriteTo(f, 2)
							f.Close()
						}
					})
					log.Printf("t=%v %s", time.Since(t0).Round(time.Second), c.Progress())
					dog.Stop()
				}
			}
		}()
	}
	var ok bool
	if r.MembersS, ok = wait(c.MembersAgree); !ok {
		return r
	}
	if r.RingS, ok = wait(c.RingAgree); !ok {
		return r
	}
	r.RingS = secs(time.Since(t0)) // ring agreement measured from the launch, like the others
	if _, ok = wait(c.Agree); !ok {
		return r
	}
	r.AgreeS = secs(time.Since(t0))
	r.JoinWallS = secs(sim.WallNow() - w0)
	r.JoinCPUPerPeer = (sim.CPU() - cpu0).Seconds() / float64(n)
	kj := c.Count() // from zero: the peers were launched in this size
	r.JoinDialsPerPeer = float64(kj.Dials) / float64(n)
	r.JoinMemberSyncsPerPeer = float64(kj.MemberSyncs) / float64(n)
	r.JoinRepairsPerPeer = float64(kj.Repairs) / float64(n)
	// A large size runs for an hour or more: what the join measured is
	// logged at once, so a run stopped later still has it.
	log.Printf("%d peers: join: members %.2f s, ring %.2f s, agreed %.2f s, %.0f s wall, %.3f CPU-s/peer, live heap %.0f MiB",
		n, r.MembersS, r.RingS, r.AgreeS, r.JoinWallS, r.JoinCPUPerPeer, liveHeap()/float64(1<<20))
	if *joinOnly {
		r.JoinOnly = true
		return r
	}

	if *noIdle {
		r.NoIdle = true
		joinAndKill(c, n, wait, &r)
		return r
	}

	// Idle: a mass join leaves every peer a backlog to relay: memberlist
	// re-gossips each new alive message (a join, each metadata update)
	// RetransmitMult·log N times from every peer that hears it, O(N log N)
	// messages per peer at about 20 a gossip round. Wait until the byte
	// rate stops falling (it has drained), then measure.
	r.SettleS = settle(c, n, limit)
	k0, cpu1, t1 := c.Count(), sim.CPU(), time.Now()
	time.Sleep(idle)
	wall := time.Since(t1)
	k1 := c.Count()
	perPeer := func(v uint64) float64 { return float64(v) / wall.Seconds() / float64(n) }
	r.IdleBytesPerS = perPeer(k1.Bytes - k0.Bytes)
	r.IdleStreamBytesPerS = perPeer(k1.StreamBytes - k0.StreamBytes)
	r.IdleMemberSyncsPerMin = 60 * perPeer(k1.MemberSyncs-k0.MemberSyncs)
	r.IdleRepairsPerMin = 60 * perPeer(k1.Repairs-k0.Repairs)
	r.IdleCPUPerPeer = (sim.CPU() - cpu1).Seconds() / wall.Seconds() / float64(n)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r.HeapMiB = float64(ms.HeapInuse) / float64(1<<20) / float64(n)
	runtime.GC()
	r.LiveMiB = liveHeap() / float64(1<<20) / float64(n)
	if *heapprof != "" {
		if f, err := os.Create(fmt.Sprintf("%s.%d", *heapprof, n)); err == nil {
			pprof.Lookup("heap").WriteTo(f, 0)
			f.Close()
		}
	}

	joinAndKill(c, n, wait, &r)
	return r
}

// joinAndKill measures one peer joining the mesh of n (until it holds the
// agreed ring) and then a crash (until every live peer lists it dead).
func joinAndKill(c *sim.Cluster, n int, wait func(func() error) (float64, bool), r *Result) {
	t2, k0 := time.Now(), c.Count()
	if err := c.Grow(1); err != nil {
		r.Error = err.Error()
		return
	}
	if _, ok := wait(c.RingAgree); !ok {
		return
	}
	r.JoinRingS = secs(time.Since(t2))
	if _, ok := wait(c.MembersAgree); !ok {
		return
	}
	k1 := c.Count()
	r.JoinerMemberSyncs, r.JoinerStreamBytes = k1.MemberSyncs-k0.MemberSyncs, k1.StreamBytes-k0.StreamBytes
	c.Kill(n / 2)
	k2 := c.Count() // without the dead peer's counters
	r.KillSeenS, _ = wait(c.DeadSeen(n / 2))
	k3 := c.Count()
	r.KillMemberSyncs, r.KillStreamBytes = k3.MemberSyncs-k2.MemberSyncs, k3.StreamBytes-k2.StreamBytes
	log.Printf("%d peers: joiner has the ring in %.2f s, all list it alive after %d membership push-pulls, %d stream bytes; a kill seen by all in %.2f s, %d push-pulls, %d stream bytes",
		n, r.JoinRingS, r.JoinerMemberSyncs, r.JoinerStreamBytes, r.KillSeenS, r.KillMemberSyncs, r.KillStreamBytes)
}

// settle waits, in 5 s windows, until the peers send less than one full
// datagram (a packet memberlist filled from its broadcast backlog) per ten
// peers in a window, or limit passes, and returns the seconds it waited.
// The backlog drains at the gossip rate, so the byte rate stays flat
// until it is gone: a falling rate is no sign.
func settle(c *sim.Cluster, n int, limit time.Duration) float64 {
	const window = 5 * time.Second
	t0 := time.Now()
	for time.Since(t0) < limit {
		f0 := c.Count().Full
		time.Sleep(window)
		if c.Count().Full-f0 < uint64(n/10+1) {
			break
		}
	}
	return secs(time.Since(t0))
}

func write(dir string, rs []Result) error {
	b, err := json.MarshalIndent(rs, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), b, 0o644); err != nil {
		return err
	}
	var t strings.Builder
	t.WriteString("Protocol times are in the run's clock: virtual (a testing/synctest bubble: what the protocol takes, " +
		"however slowly this machine simulates it) or real. Idle rates are per second of that clock. " +
		"The last columns are what the simulation cost: real (wall) seconds and process CPU seconds.\n\n")
	t.WriteString("| peers | clock | all alive (s) | ring agreed (s) | all agree + DNS (s) | 1 joiner has ring (s) | kill seen by all (s) | join backlog drained (s) | idle bytes/peer/s (of which TCP) | idle CPU/peer (% core) | join CPU s/peer | heap MiB/peer | live heap MiB/peer: idle, peak | peak RSS GiB | join: wall s | run: wall s | run: CPU s |\n")
	t.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rs {
		after := fmt.Sprintf("%.1f | %.1f | %.0f | %.0f (%.0f) | %.2f | %.3f | %.2f | %.2f", r.JoinRingS, r.KillSeenS, r.SettleS,
			r.IdleBytesPerS, r.IdleStreamBytesPerS, 100*r.IdleCPUPerPeer, r.JoinCPUPerPeer, r.HeapMiB, r.LiveMiB)
		switch r.ran() {
		case inJoin: // what follows the join was not run
			after = fmt.Sprintf("— | — | — | — | — | %.3f | — | —", r.JoinCPUPerPeer)
		case afterIt: // joiner and kill in the backlog; no idle window
			after = fmt.Sprintf("%.1f | %.1f | — | — | — | %.3f | — | —", r.JoinRingS, r.KillSeenS, r.JoinCPUPerPeer)
		}
		fmt.Fprintf(&t, "| %d | %s | %.1f | %.1f | %.1f | %s, %.2f | %.1f | %.0f | %.0f | %.0f |", r.Peers, r.Clock, r.MembersS, r.RingS, r.AgreeS,
			after, r.PeakLiveMiB, r.PeakRSSMiB/1024, r.JoinWallS, r.WallS, r.CPUS)
		if r.Error != "" {
			fmt.Fprintf(&t, " error: %s", r.Error)
		}
		t.WriteString("\n")
	}
	if err := os.WriteFile(filepath.Join(dir, "table.md"), []byte(t.String()), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "scale.svg"), []byte(plot(rs)), 0o644)
}
