package testbed

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
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

// RSSKiB returns the resident set of pid.
func RSSKiB(t testing.TB, pid int) int64 {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb
		}
	}
	return 0
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
