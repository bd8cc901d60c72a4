package ipam_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/weftmesh/weft/ipam"
	"github.com/weftmesh/weft/peer"
	bolt "go.etcd.io/bbolt"
)

type nullTransport struct{}

func (nullTransport) Broadcast([]byte)                              {}
func (nullTransport) SendTo(context.Context, peer.ID, []byte) error { return nil }

// BenchmarkAllocate measures Allocate (find a free address, update the
// run's free count, commit allocation + token in one bbolt transaction,
// broadcast the delta) on one peer that owns the whole /12, and reports
// p50/p99 latency and allocations per second.
func BenchmarkAllocate(b *testing.B) {
	for _, sync := range []bool{true, false} {
		b.Run(fmt.Sprintf("fsync=%v", sync), func(b *testing.B) {
			cfg := ipam.DefaultConfig()
			cfg.Self = 1
			cfg.DBPath = filepath.Join(b.TempDir(), "ipam.db")
			cfg.NoSync = !sync
			cfg.BootstrapInterval = time.Millisecond
			a, err := ipam.New(cfg, nullTransport{})
			if err != nil {
				b.Fatal(err)
			}
			defer a.Close()
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); _ = a.Run(ctx) }()
			defer func() { cancel(); <-done }()
			if _, err := a.Allocate(ctx, "warmup"); err != nil {
				b.Fatal(err)
			}
			lat := make([]time.Duration, 0, b.N)
			start := time.Now()
			i := 0
			for b.Loop() {
				i++
				t0 := time.Now()
				if _, err := a.Allocate(ctx, fmt.Sprintf("c%d", i)); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			el := time.Since(start)
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
			b.ReportMetric(float64(len(lat))/el.Seconds(), "allocs/s")
		})
	}
}

// BenchmarkBoltCommit is the baseline for BenchmarkAllocate: one bare
// bbolt transaction writing one 4-byte value, fsync on.
func BenchmarkBoltCommit(b *testing.B) {
	db, err := bolt.Open(filepath.Join(b.TempDir(), "x.db"), 0o600, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	lat := make([]time.Duration, 0, b.N)
	i := uint32(0)
	for b.Loop() {
		i++
		t0 := time.Now()
		err := db.Update(func(tx *bolt.Tx) error {
			bk, err := tx.CreateBucketIfNotExists([]byte("b"))
			if err != nil {
				return err
			}
			return bk.Put(binary.BigEndian.AppendUint32(nil, i), []byte{1, 2, 3, 4})
		})
		if err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkBootstrap measures the time for N peers started together
// (consensus=N, in memory, no push-pull: the ring travels by broadcast)
// until every one has the ring. Timers as in the tests: 20 ms between
// rounds, 300 ms round timeout.
func BenchmarkBootstrap(b *testing.B) {
	for _, n := range []int{3, 10, 50} {
		b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) {
			for b.Loop() {
				b.StopTimer() // opening and closing 50 bbolt files is not bootstrap
				c := newCluster(b, b.TempDir(), n, "10.32.0.0/12", consensus(n), 1)
				for _, id := range c.ids {
					c.startQuiet(id)
				}
				b.StartTimer()
				c.setPeers() // the peers learn of each other: the clock starts
				c.waitReadySync(60*time.Second, false, c.ids...)
				b.StopTimer()
				c.close()
				b.StartTimer()
			}
		})
	}
}
