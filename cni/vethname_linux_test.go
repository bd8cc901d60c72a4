package cni

import (
	"strings"
	"testing"

	"github.com/weftmesh/weft/policy"
)

// TestHostVethNameAntiSpoofing: network policy's anti-spoofing rule finds
// pods' host veths by policy.DefaultConfig().PodIfPrefix.
func TestHostVethNameAntiSpoofing(t *testing.T) {
	prefix := policy.DefaultConfig().PodIfPrefix
	if name := hostVethName("0123456789abcdef", "eth0"); !strings.HasPrefix(name, prefix) || len(name) > 15 {
		t.Errorf("hostVethName = %q; want a name of at most 15 bytes starting with policy's PodIfPrefix %q", name, prefix)
	}
}
