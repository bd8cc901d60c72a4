package routertest

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"testing"

	"pgregory.net/rapid"

	"github.com/weftmesh/weft/router"
)

// TestRouteTable checks the compact route table against a map of
// router.Route by destination, over IPv4 routes (kept short) and routes
// with IPv6 or IPv4-mapped addresses (kept whole), set, replaced, deleted
// and dropped with their device.
func TestRouteTable(t *testing.T) {
	addrs := []netip.Addr{{}, netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("255.255.255.255"),
		netip.MustParseAddr("0.0.0.0"), netip.MustParseAddr("fd00::1"), netip.MustParseAddr("::ffff:10.0.0.1")}
	dsts := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/16"),
		netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("255.255.255.255/32"),
		netip.MustParsePrefix("fd00::/64"), netip.MustParsePrefix("::ffff:10.0.0.0/104")}
	devs := []string{"", "weft", "weft-wg", "eth0"}
	rapid.Check(t, func(t *rapid.T) {
		tab := newRouteTable()
		model := map[netip.Prefix]router.Route{}
		for i := range rapid.IntRange(1, 40).Draw(t, "ops") {
			pick := func(n int, what string) int { return rapid.IntRange(0, n-1).Draw(t, fmt.Sprint(what, i)) }
			switch pick(4, "op") {
			case 0, 1:
				r := router.Route{Dst: dsts[pick(len(dsts), "dst")], Dev: devs[pick(len(devs), "dev")],
					Gw: addrs[pick(len(addrs), "gw")], Src: addrs[pick(len(addrs), "src")],
					OnLink: pick(2, "onlink") == 1, Unreachable: pick(2, "unreachable") == 1}
				tab.set(r)
				model[r.Dst] = r
			case 2:
				d := dsts[pick(len(dsts), "del")]
				tab.delete(d)
				delete(model, d)
			case 3:
				dev := devs[pick(len(devs), "deldev")]
				tab.deleteDev(dev)
				maps.DeleteFunc(model, func(_ netip.Prefix, r router.Route) bool { return r.Dev == dev })
			}
			got := tab.all()
			want := slices.Collect(maps.Values(model))
			order := func(a, b router.Route) int {
				return a.Dst.Addr().Compare(b.Dst.Addr())*256 + a.Dst.Bits() - b.Dst.Bits()
			}
			slices.SortFunc(got, order)
			slices.SortFunc(want, order)
			if !slices.Equal(got, want) || tab.len() != len(model) {
				t.Fatalf("table holds %v (len %d)\nwant %v", got, tab.len(), want)
			}
		}
	})
}
