package testbed

// What kernel tests need of the bed besides weft processes: running Go
// code inside a host, the host's port on the switch, and hosts on a second
// underlay subnet that the switch routes to (a peer that is not on-link,
// as behind a router between racks).

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/weftmesh/weft/internal/testutil"
)

// NSPath returns the path of the host's network namespace.
func (h *Host) NSPath() string { return testutil.NetNSPath(h.NS) }

// InNS runs fn inside the host's network namespace on a thread of its own
// (testutil.InNetNS): fn must not call t.Fatal.
func (h *Host) InNS(fn func() error) error { return testutil.InNetNS(h.NSPath(), fn) }

// SwitchPort returns the name of the host's veth end in the switch
// namespace (for Cut, Heal, or a capture of the host's underlay traffic).
func (h *Host) SwitchPort() string { return fmt.Sprintf("%s-s%d", h.bed.Prefix, h.Index) }

// RoutedSubnet is the underlay subnet of the hosts AddRoutedHost adds:
// Subnet with the top bit of its third byte flipped.
func (b *Bed) RoutedSubnet() netip.Prefix {
	a := b.Subnet.Addr().As4()
	a[2] ^= 0x80
	return netip.PrefixFrom(netip.AddrFrom4(a), b.Subnet.Bits())
}

// gateway is the switch's address in subnet: .254.
func gateway(subnet netip.Prefix) netip.Addr {
	a := subnet.Addr().As4()
	a[3] = 254
	return netip.AddrFrom4(a)
}

// AddRoutedHost adds a host on RoutedSubnet, behind a second bridge of the
// switch. The switch routes between the two subnets with gateway .254 on
// each; the routed host's default route and every host already on Subnet
// have a route through it. Add the on-link hosts first: a host added by
// AddHost later has no route to RoutedSubnet.
func (b *Bed) AddRoutedHost() *Host {
	routed := b.RoutedSubnet()
	if !slices.ContainsFunc(b.Hosts, func(h *Host) bool { return routed.Contains(h.Addr) }) { // the first
		b.mustIP("-n", b.Switch, "link", "add", "br1", "type", "bridge")
		b.mustIP("-n", b.Switch, "link", "set", "br1", "up")
		b.mustIP("-n", b.Switch, "addr", "add", prefixOf(gateway(routed), routed), "dev", "br1")
		b.mustIP("-n", b.Switch, "addr", "add", prefixOf(gateway(b.Subnet), b.Subnet), "dev", "br0")
		if err := b.switchSysctl("net/ipv4/ip_forward", "1"); err != nil {
			b.t.Fatalf("ip_forward in the switch: %v", err)
		}
		for _, h := range b.Hosts {
			b.mustIP("-n", h.NS, "route", "add", routed.String(), "via", gateway(b.Subnet).String())
		}
	}
	h := b.addHost(routed, "br1")
	b.mustIP("-n", h.NS, "route", "add", "default", "via", gateway(routed).String())
	return h
}

func prefixOf(a netip.Addr, subnet netip.Prefix) string {
	return netip.PrefixFrom(a, subnet.Bits()).String()
}
