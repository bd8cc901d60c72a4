package router_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/weftmesh/weft/router"
)

// macvlanConfig is the direct test config with an underlay pool: weft-mv
// at .200 and two local macvlan pods.
func macvlanConfig(pods ...string) router.Config {
	cfg := testConfig(router.TransportDirect, true)
	cfg.Peers = cfg.Peers[:1]
	cfg.Macvlan.Addr = addr("192.168.1.200")
	for _, p := range pods {
		cfg.Macvlan.Pods = append(cfg.Macvlan.Pods, addr(p))
	}
	return cfg
}

func TestMacvlanTranscripts(t *testing.T) {
	f := newFixture(t, router.Options{})
	steps := []struct {
		name string
		cfg  router.Config
		want []string
	}{
		{"weft-mv and two pods", macvlanConfig("192.168.1.201", "192.168.1.202"), []string{
			"sysctl net/ipv4/ip_forward=1",
			"link ensure weft type bridge mtu 1500 up",
			"sysctl net/ipv4/conf/weft/proxy_arp=1",
			"sysctl net/ipv4/neigh/weft/proxy_delay=0",
			"sysctl net/ipv4/conf/weft/rp_filter=2",
			"addr add 10.32.0.1/12 dev weft noprefixroute",
			"link ensure weft-mv link eth0 type macvlan mode bridge mtu 1500 up",
			"sysctl net/ipv4/conf/weft-mv/arp_ignore=1",
			"sysctl net/ipv4/conf/weft-mv/rp_filter=2",
			"addr add 192.168.1.200/32 dev weft-mv noprefixroute",
			"route replace unreachable 10.32.0.0/12",
			"route replace 10.32.0.0/14 dev weft src 10.32.0.1",
			"route replace 10.36.0.0/14 via 192.168.1.11 dev eth0 src 10.32.0.1",
			"route replace 10.36.0.1/32 via 192.168.1.11 dev eth0 src 10.32.0.1",
			"route replace 192.168.1.201/32 dev weft-mv src 192.168.1.200",
			"route replace 192.168.1.202/32 dev weft-mv src 192.168.1.200",
			"nft table ip weft: masquerade saddr 10.32.0.0/12 daddr != 10.32.0.0/12",
		}},
		{"same again: nothing", macvlanConfig("192.168.1.201", "192.168.1.202"), nil},
		{"a pod goes", macvlanConfig("192.168.1.202"), []string{
			"route delete 192.168.1.201/32 dev weft-mv src 192.168.1.200",
		}},
		// The kernel drops the device's routes with it.
		{"no pool: the device goes", testConfig(router.TransportDirect, true), []string{"link delete weft-mv"}},
	}
	for _, s := range steps {
		got := f.set(t, s.cfg)
		if diff := cmp.Diff(s.want, got); diff != "" {
			t.Errorf("%s: transcript (-want +got):\n%s", s.name, diff)
		}
	}
}

func TestMacvlanReset(t *testing.T) {
	f := newFixture(t, router.Options{})
	f.set(t, macvlanConfig("192.168.1.201"))
	if err := f.r.Reset(); err != nil {
		t.Fatalf("Reset: %v", err)
	}
	got := f.take()
	found := false
	for _, l := range got {
		found = found || l == "link delete weft-mv"
	}
	if !found {
		t.Errorf("Reset transcript %q has no link delete weft-mv", got)
	}
}

func TestMacvlanInvalid(t *testing.T) {
	for _, m := range []router.Macvlan{
		{Iface: ""},
		{Iface: "weft-mv-much-too-long"},
		{Iface: "weft-mv", Addr: netip.MustParseAddr("fd00::1")},
	} {
		cfg := testConfig(router.TransportDirect, true)
		cfg.Macvlan = m
		if err := cfg.Validate(); err == nil {
			t.Errorf("Validate with Macvlan %+v = nil; want an error", m)
		}
	}
}

// TestMacvlanWireGuardAccept: a peer's underlay ranges join its AllowedIPs
// (its macvlan pods' packets come through it) but get no route.
func TestMacvlanWireGuardAccept(t *testing.T) {
	f := newFixture(t, router.Options{})
	cfg := testConfig(router.TransportWireGuard, false)
	cfg.Peers = cfg.Peers[:1]
	cfg.Peers[0].Accept = []netip.Prefix{pfx("192.168.1.224/27")}
	got := f.set(t, cfg)
	want := "wg configure weft-wg port 51820 peers [pubB@192.168.1.11:51820 allowed 10.36.0.0/14,10.36.0.1/32,192.168.1.224/27]"
	found := false
	for _, l := range got {
		if l == want {
			found = true
		}
		if strings.Contains(l, "route") && strings.Contains(l, "192.168.1.224") {
			t.Errorf("transcript routes an accepted underlay range: %q", l)
		}
	}
	if !found {
		t.Errorf("transcript %q lacks %q", got, want)
	}
}
