package wg

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func mustKey(t *testing.T) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatalf("GeneratePrivateKey: %v", err)
	}
	return k
}

func TestDiff(t *testing.T) {
	priv, otherPriv := mustKey(t), mustKey(t)
	pa, pb, pc := mustKey(t).PublicKey(), mustKey(t).PublicKey(), mustKey(t).PublicKey()
	ep := netip.MustParseAddrPort("192.0.2.1:51820")
	ep2 := netip.MustParseAddrPort("192.0.2.2:51820")
	range1 := netip.MustParsePrefix("10.32.0.0/14")
	bridge := netip.MustParsePrefix("10.32.0.1/32")
	range2 := netip.MustParsePrefix("10.36.0.0/14")
	ipn := func(ps ...netip.Prefix) []net.IPNet { return toIPNets(ps) }
	udp := func(a netip.AddrPort) *net.UDPAddr { return net.UDPAddrFromAddrPort(a) }
	dur := func(d time.Duration) *time.Duration { return &d }
	port := func(p int) *int { return &p }
	keyp := func(k wgtypes.Key) *wgtypes.Key { return &k }

	// cur is the device as configured by the "same" call: it must diff empty.
	cur := &wgtypes.Device{
		PrivateKey: priv,
		ListenPort: 51820,
		Peers: []wgtypes.Peer{
			// Allowed IPs in another order, IPv4 as 16-byte slices: still equal.
			{PublicKey: pa, Endpoint: udp(ep), AllowedIPs: []net.IPNet{
				{IP: net.ParseIP("10.32.0.1"), Mask: net.CIDRMask(32, 32)},
				{IP: net.ParseIP("10.32.0.0").To4(), Mask: net.CIDRMask(14, 32)},
			}, PersistentKeepaliveInterval: 25 * time.Second},
			{PublicKey: pb, Endpoint: udp(ep2), AllowedIPs: ipn(range2)},
		},
	}
	same := []Peer{
		{PublicKey: pa.String(), Endpoint: ep, AllowedIPs: []netip.Prefix{range1, bridge}, Keepalive: 25 * time.Second},
		{PublicKey: pb.String(), Endpoint: ep2, AllowedIPs: []netip.Prefix{range2}},
	}
	tests := []struct {
		name    string
		priv    wgtypes.Key
		port    int
		peers   []Peer
		want    wgtypes.Config
		changed bool
	}{
		{name: "same config changes nothing", priv: priv, port: 51820, peers: same},
		{name: "port 0 keeps the port", priv: priv, port: 0, peers: same},
		{
			name: "new private key and port", priv: otherPriv, port: 51821, peers: same, changed: true,
			want: wgtypes.Config{PrivateKey: keyp(otherPriv), ListenPort: port(51821)},
		},
		{
			name: "stale peer removed, new peer added", priv: priv, port: 51820, changed: true,
			peers: []Peer{same[0], {PublicKey: pc.String(), Endpoint: ep2, AllowedIPs: []netip.Prefix{range2}}},
			want: wgtypes.Config{Peers: []wgtypes.PeerConfig{
				{PublicKey: pb, Remove: true},
				{PublicKey: pc, Endpoint: udp(ep2), ReplaceAllowedIPs: true, AllowedIPs: ipn(range2)},
			}},
		},
		{
			name: "range moved: only allowed IPs of that peer", priv: priv, port: 51820, changed: true,
			peers: []Peer{{PublicKey: pa.String(), Endpoint: ep, AllowedIPs: []netip.Prefix{bridge}, Keepalive: 25 * time.Second}, same[1]},
			want: wgtypes.Config{Peers: []wgtypes.PeerConfig{
				{PublicKey: pa, ReplaceAllowedIPs: true, AllowedIPs: ipn(bridge)},
			}},
		},
		{
			name: "endpoint and keepalive changed", priv: priv, port: 51820, changed: true,
			peers: []Peer{same[0], {PublicKey: pb.String(), Endpoint: ep, AllowedIPs: []netip.Prefix{range2}, Keepalive: time.Second}},
			want: wgtypes.Config{Peers: []wgtypes.PeerConfig{
				{PublicKey: pb, Endpoint: udp(ep), PersistentKeepaliveInterval: dur(time.Second)},
			}},
		},
		{
			name: "no desired endpoint keeps the roamed one", priv: priv, port: 51820,
			peers: []Peer{same[0], {PublicKey: pb.String(), AllowedIPs: []netip.Prefix{range2}}},
		},
		{
			name: "no peers removes all", priv: priv, port: 51820, changed: true,
			want: wgtypes.Config{Peers: []wgtypes.PeerConfig{{PublicKey: pa, Remove: true}, {PublicKey: pb, Remove: true}}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := parseDesired(tc.priv.String(), tc.port, tc.peers)
			if err != nil {
				t.Fatalf("parseDesired: %v", err)
			}
			got, changed := diff(cur, d)
			if changed != tc.changed {
				t.Errorf("diff changed = %v; want %v", changed, tc.changed)
			}
			want := tc.want
			slices.SortFunc(want.Peers, peerConfigOrder)
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("diff (-want +got):\n%s", d)
			}
		})
	}
}

func TestParseDesiredErrors(t *testing.T) {
	priv := mustKey(t)
	pub := priv.PublicKey().String()
	tests := []struct {
		name  string
		priv  string
		port  int
		peers []Peer
		want  error
	}{
		{name: "bad private key", priv: "nope", want: ErrInvalidKey},
		{name: "bad peer key", priv: priv.String(), peers: []Peer{{PublicKey: "AAAA"}}, want: ErrInvalidKey},
		{name: "duplicate peer", priv: priv.String(), peers: []Peer{{PublicKey: pub}, {PublicKey: pub}}, want: ErrDuplicatePeer},
		{name: "port out of range", priv: priv.String(), port: 70000, want: ErrInvalidConfig},
		{name: "negative keepalive", priv: priv.String(), peers: []Peer{{PublicKey: pub, Keepalive: -time.Second}}, want: ErrInvalidConfig},
		{name: "invalid prefix", priv: priv.String(), peers: []Peer{{PublicKey: pub, AllowedIPs: []netip.Prefix{{}}}}, want: ErrInvalidConfig},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseDesired(tc.priv, tc.port, tc.peers)
			if !errors.Is(err, tc.want) {
				t.Errorf("parseDesired = %v; want %v", err, tc.want)
			}
		})
	}
}
