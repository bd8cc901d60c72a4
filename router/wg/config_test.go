package wg

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		want   error
	}{
		{name: "default", change: func(*Config) {}},
		{name: "empty name", change: func(c *Config) { c.Name = "" }, want: ErrInvalidConfig},
		{name: "long name", change: func(c *Config) { c.Name = "weft-wg-0123456789" }, want: ErrInvalidConfig},
		{name: "slash in name", change: func(c *Config) { c.Name = "a/b" }, want: ErrInvalidConfig},
		{name: "tiny MTU", change: func(c *Config) { c.MTU = 100 }, want: ErrInvalidConfig},
		{name: "no timeout", change: func(c *Config) { c.StartTimeout = 0 }, want: ErrInvalidConfig},
		{name: "no command", change: func(c *Config) { c.DatapathCommand = nil }, want: ErrInvalidConfig},
		{name: "short timeout ok", change: func(c *Config) { c.StartTimeout = time.Millisecond }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.change(&c)
			if err := c.Validate(); !errors.Is(err, tc.want) {
				t.Errorf("Validate() = %v; want %v", err, tc.want)
			}
		})
	}
}

func TestDatapathArgv(t *testing.T) {
	c := DefaultConfig()
	got := datapathArgv(c)
	want := []string{"/proc/self/exe", "datapath", "--iface", "weft-wg", "--mtu", "1420"}
	if len(got) != len(want) {
		t.Fatalf("datapathArgv = %q; want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("datapathArgv = %q; want %q", got, want)
		}
	}
	if &c.DatapathCommand[0] == &got[0] {
		t.Errorf("datapathArgv aliases the config's slice")
	}
}

// TestDatapathCommand: the lean binary beside weft when it is an
// executable file, else weft's own datapath command.
func TestDatapathCommand(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "weft")
	lean := filepath.Join(dir, DatapathBinary)
	want := func(label string, w ...string) {
		t.Helper()
		if got := DatapathCommand(exe); !slices.Equal(got, w) {
			t.Errorf("%s: DatapathCommand = %q; want %q", label, got, w)
		}
	}
	want("none beside", exe, "datapath")
	if err := os.WriteFile(lean, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	want("not executable", exe, "datapath")
	if err := os.Chmod(lean, 0o755); err != nil {
		t.Fatal(err)
	}
	want("executable beside", lean)
	if err := os.Remove(lean); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(lean, 0o755); err != nil {
		t.Fatal(err)
	}
	want("a directory of that name", exe, "datapath")
}
