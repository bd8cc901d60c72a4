package daemon

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/weftmesh/weft/api"
	"github.com/weftmesh/weft/api/client"
	"github.com/weftmesh/weft/ipam"
	"github.com/weftmesh/weft/peer"
)

func TestPoolOf(t *testing.T) {
	for _, tc := range []struct {
		pool     string
		underlay bool
		bad      bool
	}{
		{"", false, false},
		{client.PoolOverlay, false, false},
		{client.PoolUnderlay, true, false},
		{"macvlan", false, true},
	} {
		u, err := poolOf(tc.pool)
		if u != tc.underlay || (err != nil) != tc.bad || (tc.bad && !errors.Is(err, api.ErrBadRequest)) {
			t.Errorf("poolOf(%q) = %v, %v; want %v, bad %v", tc.pool, u, err, tc.underlay, tc.bad)
		}
	}
}

func TestExcluded(t *testing.T) {
	a := netip.MustParseAddr
	peers := []peer.Info{{Name: "h2", Addr: a("192.168.1.12")}, {Name: "h3", Addr: a("192.168.1.13"), State: peer.Dead}}
	gw, self := a("192.168.1.1"), a("192.168.1.11")
	for _, tc := range []struct {
		addr string
		want string
	}{
		{"192.168.1.1", "the LAN gateway"},
		{"192.168.1.11", "this peer's underlay address"},
		{"192.168.1.12", "the underlay address of peer h2"},
		{"192.168.1.13", "the underlay address of peer h3"}, // dead peers' addresses too
		{"192.168.1.200", ""},
	} {
		if got := excluded(a(tc.addr), gw, self, peers); got != tc.want {
			t.Errorf("excluded(%s) = %q; want %q", tc.addr, got, tc.want)
		}
	}
	if got := excluded(a("192.168.1.200"), netip.Addr{}, self, nil); got != "" {
		t.Errorf("excluded without a gateway = %q; want none", got)
	}
}

func TestCheckUnderlaySubnet(t *testing.T) {
	p, a := netip.MustParsePrefix, netip.MustParseAddr
	for _, tc := range []struct {
		name   string
		rng    string
		subnet netip.Prefix
		gw     netip.Addr
		want   string // "" = fine
	}{
		{"inside", "192.168.1.128/25", p("192.168.1.11/24"), a("192.168.1.1"), ""},
		{"the whole subnet", "192.168.1.0/24", p("192.168.1.11/24"), netip.Addr{}, ""},
		{"other subnet", "192.168.2.128/25", p("192.168.1.11/24"), netip.Addr{}, "not inside the subnet 192.168.1.0/24 of eth0"},
		{"larger than the subnet", "192.168.0.0/23", p("192.168.1.11/24"), netip.Addr{}, "not inside"},
		{"gateway elsewhere", "192.168.1.128/25", p("192.168.1.11/24"), a("10.0.0.1"), "--underlay-gateway 10.0.0.1"},
		{"no device", "192.168.1.128/25", netip.Prefix{}, netip.Addr{}, "no interface holds"},
	} {
		err := checkUnderlaySubnet(p(tc.rng), tc.subnet, "eth0", tc.gw)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: checkUnderlaySubnet = %v; want %q", tc.name, err, tc.want)
		}
	}
}

func TestValidateUnderlay(t *testing.T) {
	p, a := netip.MustParsePrefix, netip.MustParseAddr
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"off", func(c *Config) {}, ""},
		{"on", func(c *Config) { c.UnderlayRange = p("192.168.1.128/25") }, ""},
		{"gateway without range", func(c *Config) { c.UnderlayGateway = a("192.168.1.1") }, "needs --underlay-range"},
		{"host bits", func(c *Config) { c.UnderlayRange = p("192.168.1.129/25") }, "host bits set"},
		{"IPv6", func(c *Config) { c.UnderlayRange = p("fd00::/64") }, "IPv4"},
		{"too small", func(c *Config) { c.UnderlayRange = p("192.168.1.128/31") }, "/8 to /30"},
		{"overlaps the pod range", func(c *Config) { c.UnderlayRange = p("10.32.0.0/24") }, "overlaps the pod range"},
		{"no macvlan iface", func(c *Config) { c.UnderlayRange = p("192.168.1.128/25"); c.MacvlanIface = "" }, "--macvlan-iface"},
	} {
		c := DefaultConfig()
		tc.edit(&c)
		err := c.Validate()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: Validate = %v; want %q", tc.name, err, tc.want)
		}
	}
}

func TestPoolMembers(t *testing.T) {
	rng := netip.MustParsePrefix("192.168.1.128/25")
	peers := []peer.Info{
		{ID: 1, Name: "self"}, // this peer: always a member, whatever its meta says yet
		{ID: 2, Name: "same", Meta: peer.Meta{Underlay: rng}},
		{ID: 3, Name: "none"},
		{ID: 4, Name: "other", Meta: peer.Meta{Underlay: netip.MustParsePrefix("192.168.1.0/25")}},
		{ID: 5, Name: "dead", State: peer.Dead, Meta: peer.Meta{Underlay: rng}},
	}
	var got []string
	for _, p := range poolMembers(peers, 1, rng) {
		got = append(got, p.Name)
	}
	if strings.Join(got, ",") != "self,same,dead" {
		t.Errorf("poolMembers = %v; want self,same,dead", got)
	}
}

func TestRefusalProblems(t *testing.T) {
	got := refusalProblems("underlay ring", "--underlay-range", netip.MustParsePrefix("192.168.1.128/25"),
		[]ipam.Refusal{{Peer: 7, Range: netip.MustParsePrefix("192.168.1.0/25")}, {Peer: 8, Range: netip.MustParsePrefix("10.0.0.0/24")}},
		map[peer.ID]string{7: "h4"})
	if len(got) != 2 || !strings.Contains(got[0], "peer h4") || !strings.Contains(got[0], "192.168.1.0/25") ||
		!strings.Contains(got[0], "--underlay-range") || !strings.Contains(got[1], peer.ID(8).String()) {
		t.Errorf("refusalProblems = %q", got)
	}
}

func TestIsUnderlayPod(t *testing.T) {
	for id, want := range map[string]bool{"abc": true, "abc:net1": true, underlayHostID: false, underlayTakenPfx + "192.168.1.5": false} {
		if got := isUnderlayPod(id); got != want {
			t.Errorf("isUnderlayPod(%q) = %v; want %v", id, got, want)
		}
	}
}

func TestARPConflict(t *testing.T) {
	ours, _ := net.ParseMAC("02:00:00:00:00:01")
	theirs, _ := net.ParseMAC("02:00:00:00:00:02")
	target := netip.MustParseAddr("192.168.1.200")
	probe := arpProbePacket(ours, target)
	if got := netip.AddrFrom4([4]byte(probe[14:18])); !got.IsUnspecified() {
		t.Fatalf("probe sender address %s; want 0.0.0.0 (RFC 5227)", got)
	}
	reply := func(op uint16, sha net.HardwareAddr, spa, tpa netip.Addr) []byte {
		p := arpProbePacket(sha, tpa)
		p[7] = byte(op)
		s := spa.As4()
		copy(p[14:18], s[:])
		return p
	}
	for _, tc := range []struct {
		name string
		pkt  []byte
		want bool
	}{
		{"our own probe", probe, false},
		{"reply from the holder", reply(2, theirs, target, netip.MustParseAddr("0.0.0.0")), true},
		{"the holder's announcement", reply(1, theirs, target, target), true},
		{"another machine probes it", arpProbePacket(theirs, target), true},
		{"unrelated request", reply(1, theirs, netip.MustParseAddr("192.168.1.7"), netip.MustParseAddr("192.168.1.8")), false},
		{"short", probe[:20], false},
	} {
		mac, got := arpConflict(tc.pkt, target, ours)
		if got != tc.want || (got && mac.String() != theirs.String()) {
			t.Errorf("%s: arpConflict = %v, %v; want %v", tc.name, mac, got, tc.want)
		}
	}
}

// FuzzARPConflict: any bytes off the LAN decode without panicking, and a
// packet that claims our own MAC is never a conflict.
func FuzzARPConflict(f *testing.F) {
	ours, _ := net.ParseMAC("02:00:00:00:00:01")
	theirs, _ := net.ParseMAC("02:00:00:00:00:02")
	target := netip.MustParseAddr("192.168.1.200")
	for _, s := range [][]byte{arpProbePacket(ours, target), arpProbePacket(theirs, target), nil, make([]byte, 27), make([]byte, 64)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		mac, ok := arpConflict(b, target, ours)
		if ok && mac.String() == ours.String() {
			t.Fatalf("our own packet %x is a conflict", b)
		}
	})
}
