package router

// The host side of underlay (macvlan) pods.
//
// A macvlan pod sits on the LAN with its own MAC and an address of the
// hosts' own subnet (weft-cni, cni/macvlan.go). Macvlan isolates the parent
// device from its children: the host cannot reach its own pods through the
// parent, yet kubelet probes come from the host. So the host gets a macvlan
// of its own on the same parent, in bridge mode (Config.Macvlan.Iface,
// "weft-mv"): macvlans in bridge mode reach each other inside the kernel.
//
//	weft-mv   macvlan mode bridge on the underlay device (or Macvlan.Master),
//	          the underlay device's MTU, up
//	          address Macvlan.Addr/32 (from the underlay pool, noprefixroute:
//	          the subnet's connected route stays on the parent)
//	          arp_ignore=1: answer ARP only for weft-mv's own address (the
//	          parent's addresses are answered by the parent)
//	          rp_filter=2: a pod's packets arrive here with a source of the
//	          parent's subnet
//	each local macvlan pod   POD/32 dev weft-mv src Macvlan.Addr (protocol
//	          RouteProtocol, like every route of the plan)
//
// Pods route the pod (overlay) range via the host's weft-mv address; the
// host forwards into the mesh as for any local traffic. Remote hosts reach
// macvlan pods over the LAN directly. Pods' own addresses lie outside the
// masqueraded pod range, so their traffic is never masqueraded.
//
// Macvlan.Addr invalid means no underlay pool (or not yet an address):
// the device is removed if an earlier run left it.

import (
	"fmt"
	"net/netip"
	"slices"
)

// DefaultMacvlanIface is the host-side macvlan device's default name.
const DefaultMacvlanIface = "weft-mv"

// Macvlan is the desired host side of underlay pods.
type Macvlan struct {
	Iface  string       // host-side macvlan device
	Master string       // parent device; "" = the device holding Config.Underlay
	Addr   netip.Addr   // weft-mv's address; invalid = no device
	Pods   []netip.Addr // this host's macvlan pods: a /32 route each
}

// validate reports the first problem with m.
func (m Macvlan) validate() error {
	switch {
	case m.Iface == "" || len(m.Iface) > 15:
		return fmt.Errorf("%w: macvlan interface name %q", ErrInvalidConfig, m.Iface)
	case len(m.Master) > 15:
		return fmt.Errorf("%w: macvlan master name %q", ErrInvalidConfig, m.Master)
	case m.Addr.IsValid() && !m.Addr.Is4():
		return fmt.Errorf("%w: macvlan address %v (IPv4 required)", ErrInvalidConfig, m.Addr)
	}
	return nil
}

// macvlanPlan is the desired state of the host side.
type macvlanPlan struct {
	link    *Link        // nil = no device
	addr    netip.Prefix // Addr/32
	routes  []Route
	sysctls []sysctl
}

// macvlanMaster is the parent device m asks for: its own, else the
// underlay device's ("" when unknown).
func macvlanMaster(m Macvlan, u Underlay) string {
	if m.Master != "" {
		return m.Master
	}
	return u.Dev
}

// planMacvlan computes the host side from m, for a parent of mtu bytes.
// Pure.
func planMacvlan(m Macvlan, master string, mtu int) macvlanPlan {
	if !m.Addr.IsValid() || master == "" {
		return macvlanPlan{}
	}
	if mtu == 0 {
		mtu = 1500
	}
	p := macvlanPlan{
		link: &Link{Name: m.Iface, Kind: "macvlan", Parent: master, MTU: mtu, Up: true},
		addr: netip.PrefixFrom(m.Addr, 32),
		sysctls: []sysctl{
			{"net/ipv4/conf/" + m.Iface + "/arp_ignore", "1"},
			{"net/ipv4/conf/" + m.Iface + "/rp_filter", "2"},
		},
	}
	seen := map[netip.Addr]bool{m.Addr: true}
	for _, a := range m.Pods {
		if !a.Is4() || seen[a] {
			continue
		}
		seen[a] = true
		p.routes = append(p.routes, Route{Dst: netip.PrefixFrom(a, 32), Dev: m.Iface, Src: m.Addr})
	}
	return p
}

// withMacvlanRoutes adds the host side's routes to the plan's, keeping the
// plan's order (by destination). A destination the plan routes already
// keeps the plan's route.
func withMacvlanRoutes(routes []Route, mv macvlanPlan) []Route {
	if len(mv.routes) == 0 {
		return routes
	}
	return onePerDst(append(slices.Clone(routes), mv.routes...)) // the plan's routes win
}

// macvlanFor plans the host side of cfg on underlay u, reading the
// master's MTU from the kernel.
func (r *Router) macvlanFor(cfg Config, u Underlay) (macvlanPlan, error) {
	m := cfg.Macvlan
	if !m.Addr.IsValid() {
		return macvlanPlan{}, nil
	}
	master := macvlanMaster(m, u)
	if master == "" {
		return macvlanPlan{}, fmt.Errorf("macvlan %s: no master device: the underlay device of %v is unknown", m.Iface, cfg.Underlay)
	}
	l, err := r.kernel.LinkGet(master)
	if err != nil {
		return macvlanPlan{}, fmt.Errorf("macvlan %s: master %s: %w", m.Iface, master, err)
	}
	return planMacvlan(m, master, l.MTU), nil
}

// ensureMacvlan brings the host-side device to mv (removing it when mv
// has none). Routes are ensured with the plan's.
func (r *Router) ensureMacvlan(iface string, mv macvlanPlan) error {
	if mv.link == nil {
		return r.deleteLinkIfPresent(iface)
	}
	if err := r.ensureLink(*mv.link); err != nil {
		return err
	}
	var errs []error
	for _, s := range mv.sysctls {
		if err := r.ensureSysctl(s); err != nil {
			errs = append(errs, err)
		}
	}
	if err := r.ensureAddr(iface, mv.addr); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("macvlan %s: %v", iface, errs)
	}
	return nil
}
