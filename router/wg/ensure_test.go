package wg

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
)

// TestEnsureStartFailures: a datapath command that dies or never answers
// fails Ensure with a sentinel, and a hung one is killed.
func TestEnsureStartFailures(t *testing.T) {
	testutil.Root(t, "/dev/net/tun")
	tests := []struct {
		name    string
		command []string
		want    error
	}{
		{name: "exits at once", command: []string{"/bin/sh", "-c", "exit 3", "sh"}, want: ErrDatapathExited},
		{name: "never answers", command: []string{"/bin/sh", "-c", "exec sleep 30", "sh"}, want: ErrStartTimeout},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Name = testutil.Prefix("wgf")
			cfg.ForceUserspace = true
			cfg.DatapathCommand = tc.command
			cfg.StartTimeout = 500 * time.Millisecond
			t.Cleanup(func() { os.Remove(socketPath(cfg.Name)); os.Remove(pidPath(cfg.Name)) })
			dev, err := Ensure(t.Context(), cfg)
			if !errors.Is(err, tc.want) {
				if dev != nil {
					dev.Close()
				}
				t.Fatalf("Ensure = %v; want %v", err, tc.want)
			}
		})
	}
}
