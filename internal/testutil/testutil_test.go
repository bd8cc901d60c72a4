package testutil

import (
	"errors"
	"fmt"
	"net"
	"os"
	"testing"
	"time"
)

func TestPoll(t *testing.T) {
	errNot := errors.New("not yet")
	tests := []struct {
		name    string
		holdsAt int // the call from which cond holds; 0: never
		d       time.Duration
		want    error
	}{
		{name: "at once", holdsAt: 1, d: time.Second},
		{name: "after a few calls", holdsAt: 4, d: time.Second},
		{name: "never", d: 50 * time.Millisecond, want: errNot},
		{name: "no time: one call", d: 0, want: errNot},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			start := time.Now()
			err := Poll(tt.d, func() error {
				calls++
				if tt.holdsAt > 0 && calls >= tt.holdsAt {
					return nil
				}
				return fmt.Errorf("call %d: %w", calls, errNot)
			})
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("Poll = %v; want %v", err, tt.want)
			}
			if tt.holdsAt > 0 && calls != tt.holdsAt {
				t.Errorf("Poll called cond %d times; want %d", calls, tt.holdsAt)
			}
			if took := time.Since(start); took > tt.d+100*time.Millisecond {
				t.Errorf("Poll took %v; want about %v at most", took, tt.d)
			}
		})
	}
}

func TestNetNS(t *testing.T) {
	Root(t)
	var path string
	t.Run("create", func(t *testing.T) {
		path = NetNS(t, Prefix("wu")+"-ns")
		err := InNetNS(path, func() error {
			lo, err := net.InterfaceByName("lo")
			if err != nil {
				return err
			}
			if lo.Flags&net.FlagUp == 0 {
				return errors.New("lo is down")
			}
			ifs, err := net.Interfaces()
			if err != nil || len(ifs) != 1 {
				return fmt.Errorf("interfaces %v, %v; want only lo (a fresh namespace)", ifs, err)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("InNetNS: %v", err)
		}
	})
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s after the test: %v; want deleted", path, err)
	}
}

func TestStatusKiB(t *testing.T) {
	rss, err := StatusKiB(0, "VmRSS")
	if err != nil || rss <= 0 {
		t.Fatalf("StatusKiB(self, VmRSS) = %d, %v; want > 0", rss, err)
	}
	hwm, err := StatusKiB(os.Getpid(), "VmHWM")
	if err != nil || hwm < rss {
		t.Errorf("StatusKiB(own pid, VmHWM) = %d, %v; want >= VmRSS %d", hwm, err, rss)
	}
	if _, err := StatusKiB(0, "NoSuchField"); err == nil {
		t.Error("StatusKiB(NoSuchField) = nil error")
	}
}
