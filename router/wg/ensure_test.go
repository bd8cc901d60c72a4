package wg

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"testing"
	"time"
)

// TestEnsureStartFailures: a datapath command that dies or never answers
// fails Ensure with a sentinel, and a hung one is killed.
func TestEnsureStartFailures(t *testing.T) {
	requireRoot(t)
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
			var rnd [2]byte
			rand.Read(rnd[:])
			cfg := DefaultConfig()
			cfg.Name = "wgf" + hex.EncodeToString(rnd[:])
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
