package kubebed

// The cluster's network: a switch namespace with a bridge, and a veth from
// it to the control plane, the plain machine and every node. Links are
// created with both ends already in their namespaces; nothing is connected
// to the machine's own interfaces. Routes: every node and the plain machine
// reach the Service CIDR through eth0 (ClusterIPs from the node itself);
// with CNIBridge, each node routes the other nodes' pod /24s to them, and
// the control plane and the plain machine route every pod /24 to its node.

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftmesh/weft/internal/testutil"
)

// pickSubnet returns want, or the first /24 of 192.168.70–79 that no
// route (any table) or address of the machine's own network namespace
// overlaps. The cluster's addresses live in namespaces of their own, but a
// clash would make a mistake in a test (a missing nsenter) look like it
// worked.
func pickSubnet(want string) (netip.Prefix, error) {
	used, err := rootNetworks()
	if err != nil {
		return netip.Prefix{}, err
	}
	free := func(p netip.Prefix) error {
		for _, u := range used {
			if u.Overlaps(p) {
				return fmt.Errorf("%s overlaps %s in the machine's routes or addresses", p, u)
			}
		}
		return nil
	}
	if want != "" {
		p := netip.MustParsePrefix(want).Masked()
		if err := free(p); err != nil {
			return netip.Prefix{}, fmt.Errorf("kubebed: subnet: %w", err)
		}
		return p, nil
	}
	var why []string
	for third := 70; third <= 79; third++ {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, byte(third), 0}), 24)
		err := free(p)
		if err == nil {
			return p, nil
		}
		why = append(why, err.Error())
	}
	return netip.Prefix{}, fmt.Errorf("kubebed: no free subnet in 192.168.70-79.0/24 (set Options.Subnet): %s", strings.Join(why, "; "))
}

// rootNetworks lists the IPv4 prefixes of the routes (all tables, default
// routes left out) and addresses of this process's network namespace.
func rootNetworks() ([]netip.Prefix, error) {
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("kubebed: list routes: %w", err)
	}
	var out []netip.Prefix
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		p, ok := prefixOf(r.Dst.IP, r.Dst.Mask)
		if ok && p.Bits() > 0 {
			out = append(out, p)
		}
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("kubebed: list addresses: %w", err)
	}
	for _, a := range addrs {
		if p, ok := prefixOf(a.IP, a.Mask); ok {
			out = append(out, p.Masked())
		}
	}
	return out, nil
}

func prefixOf(ip []byte, mask []byte) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Prefix{}, false
	}
	ones := 0
	for _, b := range mask {
		for ; b&0x80 != 0; b <<= 1 {
			ones++
		}
	}
	return netip.PrefixFrom(a.Unmap(), ones), true
}

// createNamespaces makes the switch, control plane, plain machine and node
// network namespaces (testutil.NetNS: each is also deleted by a cleanup of
// its own, should the teardown not have).
func (c *Cluster) createNamespaces(t testing.TB) {
	t.Helper()
	testutil.NetNS(t, c.Switch)
	testutil.NetNS(t, c.ControlPlane.NetNS)
	testutil.NetNS(t, c.Plain.NetNS)
	for _, n := range c.Nodes {
		testutil.NetNS(t, n.NetNS)
	}
}

// wireNetwork links every namespace to the switch, sets addresses, routes
// and IP forwarding in the nodes.
func (c *Cluster) wireNetwork() error {
	if err := ip("-n", c.Switch, "link", "add", "br0", "up", "type", "bridge"); err != nil {
		return err
	}
	port := func(ns, name string, addr netip.Addr) error {
		sw := c.Prefix + "-" + name
		if err := ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", sw, "netns", c.Switch); err != nil {
			return err
		}
		if err := ip("-n", c.Switch, "link", "set", sw, "master", "br0", "up"); err != nil {
			return err
		}
		if err := ip("-n", ns, "addr", "add", netip.PrefixFrom(addr, c.Subnet.Bits()).String(), "dev", "eth0"); err != nil {
			return err
		}
		return ip("-n", ns, "link", "set", "eth0", "up")
	}
	if err := port(c.ControlPlane.NetNS, "cp", c.ControlPlane.IP); err != nil {
		return err
	}
	if err := port(c.Plain.NetNS, "plain", c.Plain.IP); err != nil {
		return err
	}
	for _, n := range c.Nodes {
		if err := port(n.NetNS, n.Name, n.IP); err != nil {
			return err
		}
		// ClusterIPs from the node itself (pods are DNATed before routing).
		if err := ip("-n", n.NetNS, "route", "add", c.ServiceCIDR.String(), "dev", "eth0"); err != nil {
			return err
		}
		if err := testutil.InNetNS(n.NetNSPath(), func() error {
			return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
		}); err != nil {
			return fmt.Errorf("ip_forward in %s: %w", n.Name, err)
		}
	}
	if err := ip("-n", c.Plain.NetNS, "route", "add", c.ServiceCIDR.String(), "dev", "eth0"); err != nil {
		return err
	}
	if c.opts.CNI != CNIBridge {
		return nil
	}
	for _, n := range c.Nodes {
		for _, o := range c.Nodes {
			if o != n {
				if err := ip("-n", n.NetNS, "route", "add", o.PodCIDR.String(), "via", o.IP.String()); err != nil {
					return err
				}
			}
		}
		// Replies of the API server to pods (the kubernetes Service), and
		// the plain machine to pods: bridge does not masquerade.
		for _, h := range []Host{c.ControlPlane, c.Plain} {
			if err := ip("-n", h.NetNS, "route", "add", n.PodCIDR.String(), "via", n.IP.String()); err != nil {
				return err
			}
		}
	}
	return nil
}

// ip runs iproute2's ip with args.
func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
