package wg

import (
	"errors"
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
