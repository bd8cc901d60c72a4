package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWriteJoinOnly: a size measured with -join-only shows its join and
// dashes for what was not run, in the table, and has no points after the
// join in the plot (a zero there would read as a measurement); one
// measured with -no-idle shows its joiner and kill, dashes for the
// backlog and the idle window, and has no idle points.
func TestWriteJoinOnly(t *testing.T) {
	dir := t.TempDir()
	rs := []Result{
		{Peers: 1000, Clock: "virtual", MembersS: 12, RingS: 17, AgreeS: 17, JoinRingS: 0.25, KillSeenS: 6.8, IdleBytesPerS: 2248, JoinCPUPerPeer: 0.5},
		{Peers: 2000, Clock: "virtual", MembersS: 14, RingS: 19.1, AgreeS: 19.1, JoinCPUPerPeer: 0.789, JoinOnly: true},
		{Peers: 3000, Clock: "virtual", MembersS: 15, RingS: 20.5, AgreeS: 20.5, JoinRingS: 0.5, KillSeenS: 8.25, JoinCPUPerPeer: 0.9, NoIdle: true},
	}
	if err := write(dir, rs); err != nil {
		t.Fatal(err)
	}
	table, err := os.ReadFile(filepath.Join(dir, "table.md"))
	if err != nil {
		t.Fatal(err)
	}
	var row, noIdle string
	for _, l := range strings.Split(string(table), "\n") {
		if strings.HasPrefix(l, "| 2000 |") {
			row = l
		}
		if strings.HasPrefix(l, "| 3000 |") {
			noIdle = l
		}
	}
	if !strings.Contains(noIdle, "| 15.0 | 20.5 | 20.5 | 0.5 | 8.2 | — | — | — | 0.900 | — | —,") {
		t.Errorf("no-idle row %q: want the join, joiner and kill, and dashes for the backlog and idle", noIdle)
	}
	if strings.Count(noIdle, "|") != strings.Count(row, "|") {
		t.Errorf("no-idle row %q: not as many columns as the others", noIdle)
	}
	if !strings.Contains(row, "| 14.0 | 19.1 | 19.1 | — | — |") || !strings.Contains(row, "| 0.789 |") {
		t.Errorf("join-only row %q: want the join's figures and dashes after them", row)
	}
	if strings.Count(row, "|") != strings.Count(strings.Split(string(table), "\n")[2], "|") {
		t.Errorf("join-only row %q: not as many columns as the header", row)
	}
	svg, err := os.ReadFile(filepath.Join(dir, "scale.svg"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"ring agreed N=2000", "ring agreed N=1000", "kill seen by all N=1000", "kill seen by all N=3000", "joiner has ring N=3000"} {
		if !strings.Contains(string(svg), s) {
			t.Errorf("plot lacks the point %q", s)
		}
	}
	for _, s := range []string{"kill seen by all N=2000", "joiner has ring N=2000", "bytes/peer/s N=2000", "CPU/peer N=2000", "bytes/peer/s N=3000", "CPU/peer N=3000"} {
		if strings.Contains(string(svg), s) {
			t.Errorf("plot has the point %q of a size measured -join-only", s)
		}
	}
}
