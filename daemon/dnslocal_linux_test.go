package daemon

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/weftmesh/weft/internal/testutil"
)

// TestHostLocalLink puts the node-local DNS address up in a throwaway
// namespace: created once, unchanged when ensured again (a restart), moved
// when the address changes, repaired when the device is replaced, and gone
// after Delete.
func TestHostLocalLink(t *testing.T) {
	testutil.Root(t)
	ns := testutil.NetNS(t, testutil.Prefix("wdl"))
	const dev = "weft-dns"
	a := netip.MustParsePrefix("169.254.20.10/32")
	b := netip.MustParsePrefix("169.254.20.11/32")
	var l hostLocalLink
	in := func(fn func() error) {
		t.Helper()
		if err := testutil.InNetNS(ns, fn); err != nil {
			t.Fatal(err)
		}
	}
	addrs := func() (kind string, up bool, out []string) {
		in(func() error {
			link, err := netlink.LinkByName(dev)
			if err != nil {
				return err
			}
			kind, up = link.Type(), link.Attrs().RawFlags&1 != 0
			as, err := netlink.AddrList(link, netlink.FAMILY_V4)
			for _, x := range as {
				out = append(out, x.IPNet.String())
			}
			return err
		})
		return kind, up, out
	}
	steps := []struct {
		name        string
		do          func() error
		addr        netip.Prefix
		wantChanged bool
	}{
		{"create", nil, a, true},
		{"again (a restart)", nil, a, false},
		{"address changed", nil, b, true},
		{"foreign address added by hand", func() error {
			link, _ := netlink.LinkByName(dev)
			return netlink.AddrAdd(link, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 9, 9, 9), Mask: net.CIDRMask(24, 32)}})
		}, b, true},
		{"device replaced by a veth", func() error {
			link, _ := netlink.LinkByName(dev)
			if err := netlink.LinkDel(link); err != nil {
				return err
			}
			attrs := netlink.NewLinkAttrs()
			attrs.Name = dev
			return netlink.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: dev + "-p"})
		}, b, true},
	}
	for _, s := range steps {
		if s.do != nil {
			in(s.do)
		}
		var changed bool
		in(func() (err error) { changed, err = l.Ensure(dev, s.addr); return err })
		if changed != s.wantChanged {
			t.Errorf("%s: Ensure changed = %v; want %v", s.name, changed, s.wantChanged)
		}
		kind, up, got := addrs()
		if (kind != "dummy" && kind != "bridge") || !up || strings.Join(got, ",") != s.addr.String() {
			t.Errorf("%s: %s is %s up=%v with %v; want a dummy (or a bridge without the dummy driver), up, with %v", s.name, dev, kind, up, got, s.addr)
		}
	}
	in(func() error { return l.Delete(dev) })
	in(func() error {
		if _, err := netlink.LinkByName(dev); err == nil {
			t.Errorf("%s still there after Delete", dev)
		}
		return nil
	})
	in(func() error { return l.Delete(dev) }) // a missing device is not an error
}
