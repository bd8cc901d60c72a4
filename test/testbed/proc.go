package testbed

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/weftmesh/weft/internal/testutil"
)

// CPUTicks returns the user+system clock ticks (1/100 s) pid has used.
func CPUTicks(t testing.TB, pid int) int64 {
	t.Helper()
	n, err := cpuTicks(pid)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func cpuTicks(pid int) (int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s, nil
}

// TreeCPUTicks returns the CPU time, in clock ticks, that pid and its
// live descendants have used so far (a peer with its datapath process);
// a descendant that exits meanwhile is left out.
func TreeCPUTicks(t testing.TB, pid int) int64 {
	t.Helper()
	return CPUTicks(t, pid) + childrenTicks(pid)
}

func childrenTicks(pid int) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return 0
	}
	var n int64
	for _, f := range strings.Fields(string(raw)) {
		if c, err := strconv.Atoi(f); err == nil {
			if ticks, err := cpuTicks(c); err == nil {
				n += ticks + childrenTicks(c)
			}
		}
	}
	return n
}

// Ticks are the machine's CPU clock ticks since boot, all cores summed
// (the first line of /proc/stat).
type Ticks struct{ Busy, Total int64 }

// MachineTicks reads the machine's CPU ticks: busy is everything but idle
// and iowait (user, nice, system, irq, softirq, steal).
func MachineTicks(t testing.TB) Ticks {
	t.Helper()
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Fatal(err)
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		t.Fatalf("/proc/stat: unexpected first line %q", line)
	}
	var tk Ticks
	for i, v := range f[1:9] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("/proc/stat: %q: %v", line, err)
		}
		tk.Total += n
		if i != 3 && i != 4 { // idle, iowait
			tk.Busy += n
		}
	}
	return tk
}

// BusySince is the busy fraction of the machine's cores between then and t.
func (t Ticks) BusySince(then Ticks) float64 {
	if t.Total == then.Total {
		return 0
	}
	return float64(t.Busy-then.Busy) / float64(t.Total-then.Total)
}

// RSSKiB returns the resident set of pid.
func RSSKiB(t testing.TB, pid int) int64 {
	t.Helper()
	kb, err := testutil.StatusKiB(pid, "VmRSS")
	if err != nil {
		t.Fatal(err)
	}
	return kb
}

// RaiseNeighbourTables raises the kernel's IPv4 and IPv6 neighbour table
// limits (gc_thresh1/2/3, shared by every network namespace; defaults
// 128/512/1024) so that thresh3 is at least entries, and restores the old
// values when the test ends. A bed of 40 hosts that each see 40
// neighbours would overflow the defaults ("neighbour table overflow").
func RaiseNeighbourTables(t testing.TB, entries int) {
	t.Helper()
	for _, fam := range []string{"ipv4", "ipv6"} {
		for i, want := range []int{entries / 8, entries / 2, entries} {
			p := fmt.Sprintf("/proc/sys/net/%s/neigh/default/gc_thresh%d", fam, i+1)
			raw, err := os.ReadFile(p)
			if err != nil {
				t.Fatalf("neighbour table limit: %v", err)
			}
			old := strings.TrimSpace(string(raw))
			if cur, err := strconv.Atoi(old); err == nil && cur >= want {
				continue
			}
			if err := os.WriteFile(p, []byte(strconv.Itoa(want)), 0o644); err != nil {
				t.Fatalf("raise %s: %v", p, err)
			}
			t.Logf("%s raised from %s to %d for this test", p, old, want)
			t.Cleanup(func() {
				if err := os.WriteFile(p, []byte(old), 0o644); err != nil {
					t.Errorf("restore %s to %s: %v", p, old, err)
				}
			})
		}
	}
}
