package datapathcmd

import (
	"errors"
	"testing"
)

// Bad command lines are usage errors, before anything is created.
func TestRunUsage(t *testing.T) {
	for _, args := range [][]string{
		{"--no-such-flag"},
		{"--mtu", "big"},
		{"--log-level", "loud"},
		{"--iface", "weft-wg", "extra"},
	} {
		if err := Run("weft-datapath", args); !errors.Is(err, ErrUsage) {
			t.Errorf("Run(%q) = %v; want a usage error", args, err)
		}
	}
}
