package daemon

import (
	"testing"
	"time"
)

func TestSeenDue(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 5, 0, 0, 0, time.UTC)
	abc := []string{"10.0.0.1:6783", "10.0.0.2:6783", "10.0.0.3:6783"}
	for _, tc := range []struct {
		name         string
		saved, alive []string
		at           time.Time
		want         bool
	}{
		{"nothing changed", abc, abc, t0, false},
		{"nothing changed, long after", abc, abc, t0.Add(-time.Hour), false},
		{"a new peer: at once", abc[:2], abc, t0, true},
		{"a new peer among fewer: at once", abc[:2], abc[1:], t0, true},
		{"first save", nil, abc, time.Time{}, true},
		{"a peer went down: kept a while", abc, abc[1:], t0.Add(-seenKeep + time.Second), false},
		{"a peer went down: dropped after seenKeep", abc, abc[1:], t0.Add(-seenKeep), true},
	} {
		if got := seenDue(tc.saved, tc.alive, tc.at, t0); got != tc.want {
			t.Errorf("%s: seenDue(%v, %v) = %v, want %v", tc.name, tc.saved, tc.alive, got, tc.want)
		}
	}
}
