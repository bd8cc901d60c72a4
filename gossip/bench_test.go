package gossip

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/weftmesh/weft/gossip/gossiptest"
	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/peer"
)

// BenchmarkConverge measures, for meshes of 10, 100 and 500 in-memory
// peers with memberlist's DefaultLAN timers, the time until every peer
// sees every other alive, and the heap per peer. Each peer joins an
// earlier one (a tree, as operators launch hosts). WEFT_BENCH_DEADLINE
// (seconds, default 300) bounds one run; a mesh that has not converged by
// then reports the fraction of the mesh the slowest peer saw.
//
//	go test -run - -bench Converge -benchtime 1x ./gossip/
func BenchmarkConverge(b *testing.B) {
	deadline := 300 * time.Second
	if s, err := strconv.Atoi(os.Getenv("WEFT_BENCH_DEADLINE")); err == nil {
		deadline = time.Duration(s) * time.Second
	}
	for _, n := range []int{10, 100, 500} {
		b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				convergeOnce(b, n, deadline)
			}
		})
	}
}

func convergeOnce(b *testing.B, n int, deadline time.Duration) {
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var mnet gossiptest.Network
	meshes := make([]*Mesh, n)
	trs := make([]*gossiptest.Transport, n)
	for i := range meshes {
		trs[i] = mnet.NewTransport(fmt.Sprintf("b%04d", i))
		cfg := DefaultConfig()
		cfg.Name, cfg.ID = fmt.Sprintf("b%04d", i), peer.ID(i+1)
		tr := trs[i]
		cfg.Memberlist = func(c *memberlist.Config) { c.Transport = tr }
		m, err := New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		meshes[i] = m
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, n)
	start := time.Now()
	for i, m := range meshes {
		if i > 0 {
			m.SetTargets([]string{trs[(i-1)/2].Addr()})
		}
		go func() { _ = m.Run(ctx); done <- struct{}{} }()
	}
	least := 0
	_ = testutil.Poll(deadline, func() error { // not converging is what seen-fraction reports
		least = n
		for _, m := range meshes {
			alive := 0
			for _, p := range m.Peers() {
				if p.State == peer.Alive {
					alive++
				}
			}
			least = min(least, alive)
		}
		return wantCount("least alive seen by a peer", least, n)
	})
	took := time.Since(start)
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	b.ReportMetric(took.Seconds(), "s-to-converge")
	b.ReportMetric(float64(least)/float64(n), "seen-fraction")
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(n)/1024, "KiB-heap/peer")
	for _, m := range meshes {
		m.Shutdown() // no leave storm: measure convergence, not departure
	}
	cancel()
	for range meshes {
		<-done
	}
}
