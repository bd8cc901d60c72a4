package main

import (
	"os"
	"runtime/metrics"
	"runtime/pprof"
	"sync"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
)

// What a size costs in memory. The simulator holds O(N²) state (every peer
// keeps tables of all the others), and a mass join's peak is above the idle
// point's, so the table gives the live heap at both and the process's
// resident high-water mark: what decides whether a size fits the machine.

const liveMetric = "/gc/heap/live:bytes"

// liveHeap returns the heap the last GC found live, in bytes.
func liveHeap() float64 {
	s := []metrics.Sample{{Name: liveMetric}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return float64(s[0].Value.Uint64())
}

// memWatch samples the live heap every second of real time (it must be
// started outside a synctest bubble) and tracks its largest value. With a
// profile path it writes a heap profile there each time the peak grows by
// a tenth: the last one written shows what the peak held.
type memWatch struct {
	done    chan struct{}
	profile string
	wg      sync.WaitGroup
	mu      sync.Mutex
	peak    float64
	written float64 // the peak the last profile was written at
}

// watchMemory resets the process's resident high-water mark (VmHWM) and
// starts sampling the live heap; profile, if not "", receives heap
// profiles of the peak.
func watchMemory(profile string) *memWatch {
	// "5" resets the peak resident set size (proc(5), clear_refs).
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
	w := &memWatch{done: make(chan struct{}), profile: profile}
	w.wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			w.sample()
			select {
			case <-w.done:
				return
			case <-t.C:
			}
		}
	})
	return w
}

func (w *memWatch) sample() {
	v := liveHeap()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.peak = max(w.peak, v)
	if w.profile != "" && w.peak > 1.1*w.written {
		if f, err := os.Create(w.profile); err == nil {
			pprof.Lookup("heap").WriteTo(f, 0) // as of the last GC, as liveHeap
			f.Close()
			w.written = w.peak
		}
	}
}

// stop ends the sampling and returns the largest live heap seen and the
// process's resident high-water mark since watchMemory, in bytes.
func (w *memWatch) stop() (peakLive, peakRSS float64) {
	close(w.done)
	w.wg.Wait()
	w.sample()
	return w.peak, vmHWM()
}

// vmHWM reads the process's peak resident set size from /proc, in bytes
// (0 if unreadable).
func vmHWM() float64 {
	kb, err := testutil.StatusKiB(0, "VmHWM")
	if err != nil {
		return 0
	}
	return float64(kb) * 1024
}
