package daemon

import (
	"sync/atomic"
	"testing"
	"time"
)

func TestReadWithin(t *testing.T) {
	var busy atomic.Bool
	last := func() string { return "last" }
	// A read that answers in time.
	if got := readWithin(&busy, time.Minute, func() string { return "fresh" }, last); got != "fresh" {
		t.Errorf("quick read: %q; want fresh", got)
	}
	// A read that hangs: the last reading, after the wait.
	release := make(chan struct{})
	hung := func() string { <-release; return "late" }
	if got := readWithin(&busy, time.Millisecond, hung, last); got != "last" {
		t.Errorf("hung read: %q; want last", got)
	}
	// While it hangs, no second read starts: the last reading at once.
	started := false
	if got := readWithin(&busy, time.Minute, func() string { started = true; return "fresh" }, last); got != "last" || started {
		t.Errorf("read while one is under way: %q, started %v; want last, not started", got, started)
	}
	// Once it ends, reads start again.
	close(release)
	for deadline := time.Now().Add(30 * time.Second); busy.Load(); {
		if time.Now().After(deadline) {
			t.Fatal("the hung read never cleared busy")
		}
		time.Sleep(time.Millisecond)
	}
	if got := readWithin(&busy, time.Minute, func() string { return "fresh" }, last); got != "fresh" {
		t.Errorf("read after the hung one ended: %q; want fresh", got)
	}
}
