package daemon

import (
	"context"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
)

// TestARPProbe runs the real probe in a throwaway namespace on a veth to a
// second namespace that holds one address: that address answers, another
// does not; and underlayLink finds the device, its subnet and gateway.
func TestARPProbe(t *testing.T) {
	testutil.Root(t, "ip")
	pfx := testutil.Prefix("ua")
	probeNS, holderNS := pfx+"-p", pfx+"-h"
	probePath := testutil.NetNS(t, probeNS)
	testutil.NetNS(t, holderNS)
	for _, args := range [][]string{
		{"link", "add", "eth0", "netns", probeNS, "type", "veth", "peer", "name", "eth0", "netns", holderNS},
		{"-n", probeNS, "addr", "add", "10.99.0.1/24", "dev", "eth0"},
		{"-n", probeNS, "link", "set", "eth0", "up"},
		{"-n", probeNS, "route", "add", "default", "via", "10.99.0.254"},
		{"-n", holderNS, "addr", "add", "10.99.0.7/24", "dev", "eth0"},
		{"-n", holderNS, "link", "set", "eth0", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var taken, free, dev string
	var subnet netip.Prefix
	var gw netip.Addr
	err := testutil.InNetNS(probePath, func() error {
		var err error
		if dev, subnet, gw, err = underlayLink(netip.MustParseAddr("10.99.0.1")); err != nil {
			return err
		}
		// The holder's interface may still be coming up: ask until it answers.
		if err := testutil.Poll(10*time.Second, func() error {
			if taken, err = arpProbe(ctx, "eth0", netip.MustParseAddr("10.99.0.7"), 200*time.Millisecond); err != nil || taken != "" {
				return err
			}
			return context.DeadlineExceeded
		}); err != nil {
			return err
		}
		free, err = arpProbe(ctx, "eth0", netip.MustParseAddr("10.99.0.8"), 200*time.Millisecond)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if dev != "eth0" || subnet != netip.MustParsePrefix("10.99.0.1/24") || gw != netip.MustParseAddr("10.99.0.254") {
		t.Errorf("underlayLink = %s, %s, %s; want eth0, 10.99.0.1/24, 10.99.0.254", dev, subnet, gw)
	}
	if !strings.HasPrefix(taken, "answered ARP from ") {
		t.Errorf("probe of the held address = %q; want an answer", taken)
	}
	if free != "" {
		t.Errorf("probe of a free address = %q; want none", free)
	}
}
