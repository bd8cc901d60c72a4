package router

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RouteList implements Kernel.
func (k *NetlinkKernel) RouteList() ([]Route, error) {
	filter := &netlink.Route{Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN}
	rs, err := k.h.RouteListFiltered(netlink.FAMILY_V4, filter, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("route list proto %d: %w", RouteProtocol, err)
	}
	names := map[int]string{}
	out := make([]Route, 0, len(rs))
	for _, nr := range rs {
		dst, ok := prefixFromIPNet(nr.Dst)
		if !ok {
			continue
		}
		r := Route{Dst: dst, OnLink: nr.Flags&int(netlink.FLAG_ONLINK) != 0, Unreachable: nr.Type == unix.RTN_UNREACHABLE}
		r.Gw, _ = netip.AddrFromSlice(nr.Gw)
		r.Gw = r.Gw.Unmap()
		r.Src, _ = netip.AddrFromSlice(nr.Src)
		r.Src = r.Src.Unmap()
		if nr.LinkIndex > 0 {
			name, ok := names[nr.LinkIndex]
			if !ok {
				if l, err := k.h.LinkByIndex(nr.LinkIndex); err == nil {
					name = l.Attrs().Name
				}
				names[nr.LinkIndex] = name
			}
			r.Dev = name
		}
		if r.Unreachable { // the kernel reports such routes on lo
			r = Route{Dst: dst, Unreachable: true}
		}
		out = append(out, r)
	}
	return out, nil
}

func (k *NetlinkKernel) netlinkRoute(r Route) (*netlink.Route, error) {
	nr := &netlink.Route{Dst: ipNet(r.Dst), Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN,
		Scope: netlink.SCOPE_UNIVERSE, Type: unix.RTN_UNICAST}
	if r.Unreachable {
		nr.Type = unix.RTN_UNREACHABLE
		return nr, nil
	}
	if r.Dev != "" {
		l, err := k.link(r.Dev)
		if err != nil {
			return nil, err
		}
		nr.LinkIndex = l.Attrs().Index
	}
	if r.Gw.IsValid() {
		nr.Gw = r.Gw.AsSlice()
	} else {
		nr.Scope = netlink.SCOPE_LINK
	}
	if r.Src.IsValid() {
		nr.Src = r.Src.AsSlice()
	}
	if r.OnLink {
		nr.SetFlag(netlink.FLAG_ONLINK)
	}
	return nr, nil
}

// RouteReplace implements Kernel.
func (k *NetlinkKernel) RouteReplace(r Route) error {
	nr, err := k.netlinkRoute(r)
	if err != nil {
		return err
	}
	if err := k.h.RouteReplace(nr); err != nil {
		return fmt.Errorf("route replace %v: %w", r, err)
	}
	return nil
}

// RouteDelete implements Kernel.
func (k *NetlinkKernel) RouteDelete(r Route) error {
	nr, err := k.netlinkRoute(r)
	if errors.Is(err, ErrNotFound) {
		nr, err = &netlink.Route{Dst: ipNet(r.Dst), Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN}, nil
	}
	if err != nil {
		return err
	}
	if err := k.h.RouteDel(nr); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("route delete %v: %w", r, err)
	}
	return nil
}

// NeighList implements Kernel.
func (k *NetlinkKernel) NeighList(dev string) ([]Neigh, error) {
	l, err := k.link(dev)
	if err != nil {
		return nil, err
	}
	ns, err := k.h.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("neigh list dev %s: %w", dev, err)
	}
	var out []Neigh
	for _, n := range ns {
		ip, ok := netip.AddrFromSlice(n.IP)
		if !ok || n.State&netlink.NUD_PERMANENT == 0 {
			continue
		}
		out = append(out, Neigh{Dev: dev, IP: ip.Unmap(), MAC: n.HardwareAddr})
	}
	return out, nil
}

func (k *NetlinkKernel) neigh(n Neigh) (*netlink.Neigh, error) {
	l, err := k.link(n.Dev)
	if err != nil {
		return nil, err
	}
	return &netlink.Neigh{LinkIndex: l.Attrs().Index, Family: netlink.FAMILY_V4,
		State: netlink.NUD_PERMANENT, IP: n.IP.AsSlice(), HardwareAddr: n.MAC}, nil
}

// NeighSet implements Kernel.
func (k *NetlinkKernel) NeighSet(n Neigh) error {
	nn, err := k.neigh(n)
	if err != nil {
		return err
	}
	if err := k.h.NeighSet(nn); err != nil {
		return fmt.Errorf("neigh replace %v: %w", n, err)
	}
	return nil
}

// NeighDelete implements Kernel.
func (k *NetlinkKernel) NeighDelete(n Neigh) error {
	nn, err := k.neigh(n)
	if err != nil {
		return err
	}
	if err := k.h.NeighDel(nn); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("neigh delete %v: %w", n, err)
	}
	return nil
}

// FDBList implements Kernel.
func (k *NetlinkKernel) FDBList(dev string) ([]FDB, error) {
	l, err := k.link(dev)
	if err != nil {
		return nil, err
	}
	ns, err := k.h.NeighList(l.Attrs().Index, unix.AF_BRIDGE)
	if err != nil {
		return nil, fmt.Errorf("fdb list dev %s: %w", dev, err)
	}
	var out []FDB
	for _, n := range ns {
		dst, ok := netip.AddrFromSlice(n.IP)
		if !ok || n.HardwareAddr == nil {
			continue
		}
		out = append(out, FDB{Dev: dev, MAC: n.HardwareAddr, Dst: dst.Unmap()})
	}
	return out, nil
}

func (k *NetlinkKernel) fdb(f FDB) (*netlink.Neigh, error) {
	l, err := k.link(f.Dev)
	if err != nil {
		return nil, err
	}
	return &netlink.Neigh{LinkIndex: l.Attrs().Index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
		State: netlink.NUD_PERMANENT, IP: f.Dst.AsSlice(), HardwareAddr: net.HardwareAddr(f.MAC)}, nil
}

// FDBSet implements Kernel.
func (k *NetlinkKernel) FDBSet(f FDB) error {
	n, err := k.fdb(f)
	if err != nil {
		return err
	}
	if err := k.h.NeighSet(n); err != nil {
		return fmt.Errorf("fdb replace %v: %w", f, err)
	}
	return nil
}

// FDBDelete implements Kernel.
func (k *NetlinkKernel) FDBDelete(f FDB) error {
	n, err := k.fdb(f)
	if err != nil {
		return err
	}
	if err := k.h.NeighDel(n); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("fdb delete %v: %w", f, err)
	}
	return nil
}
