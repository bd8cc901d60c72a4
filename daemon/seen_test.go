package daemon

import (
	"testing"
	"time"
)

func TestSeenDue(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 5, 0, 0, 0, time.UTC)
	abc := []string{"10.0.0.1:6783", "10.0.0.2:6783", "10.0.0.3:6783"}
	for _, tc := range []struct {
		name              string
		saved, alive      []string
		at                time.Time
		wantDue, wantUrge bool
	}{
		{"nothing changed", abc, abc, t0, false, false},
		{"nothing changed, long after", abc, abc, t0.Add(-time.Hour), false, false},
		{"a new peer: soon", abc[:2], abc, t0.Add(-persistEvery), true, true},
		{"a new peer right after a save: on a later pass", abc[:2], abc, t0.Add(-persistEvery + time.Millisecond), false, true},
		{"a new peer among fewer: soon", abc[:2], abc[1:], t0.Add(-persistEvery), true, true},
		{"first save", nil, abc, time.Time{}, true, true},
		{"a peer went down: kept a while", abc, abc[1:], t0.Add(-seenKeep + time.Second), false, false},
		{"a peer went down: dropped after seenKeep", abc, abc[1:], t0.Add(-seenKeep), true, false},
	} {
		due, urgent := seenDue(tc.saved, tc.alive, tc.at, t0)
		if due != tc.wantDue || urgent != tc.wantUrge {
			t.Errorf("%s: seenDue(%v, %v) = %v, %v; want %v, %v", tc.name, tc.saved, tc.alive, due, urgent, tc.wantDue, tc.wantUrge)
		}
	}
}
