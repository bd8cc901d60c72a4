package wg

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
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

// TestEnsureExternalDatapath: with ExternalDatapath, Ensure never starts a
// process. Nothing running is a timeout; a datapath that someone else
// started (here: this test, as the weft-datapath container would) is
// adopted, and closing the handle leaves it running.
func TestEnsureExternalDatapath(t *testing.T) {
	testutil.Root(t, "/dev/net/tun", "nsenter")
	ns := testutil.NetNS(t, testutil.Prefix("wgx"))
	marker := filepath.Join(t.TempDir(), "started")
	cfg := DefaultConfig()
	cfg.Name = testutil.Prefix("wgx")
	cfg.ForceUserspace = true
	cfg.ExternalDatapath = true
	cfg.DatapathCommand = []string{"/bin/sh", "-c", "touch " + marker, "sh"}
	cfg.StartTimeout = 500 * time.Millisecond
	t.Cleanup(func() { os.Remove(socketPath(cfg.Name)); os.Remove(pidPath(cfg.Name)) })

	err := testutil.InNetNS(ns, func() error {
		_, err := Ensure(t.Context(), cfg)
		return err
	})
	if !errors.Is(err, ErrStartTimeout) {
		t.Fatalf("Ensure with no external datapath = %v; want %v", err, ErrStartTimeout)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("Ensure started the datapath command although it is external")
	}

	dp := exec.Command("nsenter", "--net="+ns, os.Args[0], "datapath-helper", "--iface", cfg.Name)
	dp.Stderr = os.Stderr
	if err := dp.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dp.Process.Kill(); dp.Wait() })
	cfg.StartTimeout = 10 * time.Second
	err = testutil.InNetNS(ns, func() error {
		dev, err := Ensure(t.Context(), cfg)
		if err != nil {
			return err
		}
		if !dev.Userspace() {
			t.Error("adopted device is not userspace")
		}
		return dev.Close()
	})
	if err != nil {
		t.Fatalf("Ensure with the external datapath running = %v", err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("Ensure started the datapath command although one answered")
	}
	if err := dp.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("the external datapath is gone after Close: %v", err)
	}
}
