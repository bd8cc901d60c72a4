package cni

// CHECK compares the live state with the prevResult of ADD: the pod's
// interface exists and is up with the same MAC, addresses and routes; the
// host end is up, routed (no bridge port) and the host routes the pod's
// addresses to it; the peer still has the allocation.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/weftmesh/weft/api/client"
)

// Check verifies the container's attachment against prevResult.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	inv, err := p.begin("CHECK", args)
	if err != nil {
		return err
	}
	return inv.end(p.check(inv, args))
}

func (p *Plugin) check(inv *invocation, args *skel.CmdArgs) error {
	if inv.conf.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "CHECK needs prevResult", "the runtime passes ADD's result as prevResult")
	}
	prev, err := current.NewResultFromResult(inv.conf.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "convert prevResult: "+err.Error(), "")
	}
	want, err := expectedPod(prev, args.IfName)
	if err != nil {
		return cniError(types.ErrInvalidNetworkConfig, "prevResult", err)
	}

	id := allocID(args.ContainerID, args.IfName)
	alloc, err := inv.peer.Lookup(inv.ctx, id)
	if errors.Is(err, client.ErrNotFound) {
		return types.NewError(types.ErrUnknownContainer, "weft peer has no allocation for "+id, "delete and re-create the pod")
	}
	if err != nil {
		return peerError("look up "+id, inv.conf.Socket, err)
	}
	if !slicesContainsPrefix(want.addrs, alloc.Address) {
		return cniError(types.ErrInternal, "check", fmt.Errorf("%w: peer allocated %s to %s, prevResult has %v", ErrCheckFailed, alloc.Address, id, want.addrs))
	}

	macvlan := inv.conf.Mode == ModeMacvlan
	if macvlan != (alloc.Pool == client.PoolUnderlay) {
		return cniError(types.ErrInternal, "check", fmt.Errorf("%w: %s holds an address of the %q pool, the config asks for mode %q", ErrCheckFailed, id, alloc.Pool, inv.conf.Mode))
	}
	if !macvlan {
		if err := checkHost(hostVethName(args.ContainerID, args.IfName), bridgeName(inv.conf, alloc), want.addrs); err != nil {
			return cniError(types.ErrInternal, "check host side", err)
		}
	}

	netNS, err := ns.GetNS(args.Netns)
	if err != nil {
		return types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("open netns %q: %v", args.Netns, err), "")
	}
	defer netNS.Close()
	pod, err := podHandle(netNS.Fd())
	if err != nil {
		return cniError(types.ErrInternal, "check pod", err)
	}
	defer pod.Close()
	check := checkPod
	if macvlan {
		check = checkMacvlan
	}
	if err := check(pod, args.IfName, want); err != nil {
		return cniError(types.ErrInternal, "check pod", err)
	}
	return nil
}

// podState is what prevResult says the pod's interface looks like.
type podState struct {
	mac    string
	addrs  []netip.Prefix
	routes []*types.Route
}

func expectedPod(r *current.Result, ifName string) (*podState, error) {
	idx := -1
	for i, intf := range r.Interfaces {
		if intf.Name == ifName && intf.Sandbox != "" {
			idx = i
		}
	}
	if idx < 0 {
		return nil, fmt.Errorf("%w: no interface %s with a sandbox", ErrCheckFailed, ifName)
	}
	st := &podState{mac: r.Interfaces[idx].Mac, routes: r.Routes}
	for _, ipc := range r.IPs {
		if ipc.Interface == nil || *ipc.Interface != idx {
			continue
		}
		p, ok := ipNetToPrefix(ipc.Address)
		if !ok {
			return nil, fmt.Errorf("%w: bad address %v", ErrCheckFailed, ipc.Address)
		}
		st.addrs = append(st.addrs, p)
	}
	if len(st.addrs) == 0 {
		return nil, fmt.Errorf("%w: no address for %s", ErrCheckFailed, ifName)
	}
	return st, nil
}

// checkHost: the bridge (the gateway) exists; the host end exists, is a
// veth, is up, is not a bridge port, answers ARP by proxy, and the host
// routes each of addrs to it.
func checkHost(hostName, bridge string, addrs []netip.Prefix) error {
	if _, err := lookupBridge(bridge); err != nil {
		return err
	}
	l, err := netlink.LinkByName(hostName)
	if err != nil {
		return fmt.Errorf("%w: host veth %s: %v", ErrCheckFailed, hostName, err)
	}
	switch {
	case l.Type() != "veth":
		return fmt.Errorf("%w: %s is a %s, not a veth", ErrCheckFailed, hostName, l.Type())
	case l.Attrs().MasterIndex != 0:
		return fmt.Errorf("%w: %s is enslaved to interface %d; weft's pods are routed", ErrCheckFailed, hostName, l.Attrs().MasterIndex)
	case l.Attrs().Flags&net.FlagUp == 0:
		return fmt.Errorf("%w: %s is down", ErrCheckFailed, hostName)
	}
	for _, s := range hostSysctls(hostName) {
		b, err := os.ReadFile(s.path)
		if err != nil || strings.TrimSpace(string(b)) != s.value {
			return fmt.Errorf("%w: %s is %q, want %s", ErrCheckFailed, s.path, strings.TrimSpace(string(b)), s.value)
		}
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{LinkIndex: l.Attrs().Index},
		netlink.RT_FILTER_OIF)
	if err != nil {
		return fmt.Errorf("list routes of %s: %w", hostName, err)
	}
	for _, a := range addrs {
		host := netip.PrefixFrom(a.Addr(), a.Addr().BitLen())
		if !hasRoute(routes, &types.Route{Dst: *prefixToIPNet(host)}) {
			return fmt.Errorf("%w: no route %s dev %s on the host", ErrCheckFailed, host, hostName)
		}
	}
	return nil
}

// checkPod: the interface, its MAC, addresses and routes inside the pod.
func checkPod(pod *netlink.Handle, ifName string, want *podState) error {
	l, err := pod.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("%w: %s in pod: %v", ErrCheckFailed, ifName, err)
	}
	if want.mac != "" && l.Attrs().HardwareAddr.String() != want.mac {
		return fmt.Errorf("%w: %s has MAC %s, prevResult %s", ErrCheckFailed, ifName, l.Attrs().HardwareAddr, want.mac)
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("%w: %s is down", ErrCheckFailed, ifName)
	}
	addrs, err := pod.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", ifName, err)
	}
	have := make(map[netip.Prefix]bool)
	for _, a := range addrs {
		if p, ok := ipNetToPrefix(*a.IPNet); ok {
			have[p] = true
		}
	}
	for _, p := range want.addrs {
		if !have[p] {
			return fmt.Errorf("%w: %s lacks address %s", ErrCheckFailed, ifName, p)
		}
	}
	routes, err := pod.RouteList(l, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list routes of %s: %w", ifName, err)
	}
	for _, wr := range want.routes {
		if !hasRoute(routes, wr) {
			return fmt.Errorf("%w: %s lacks route %s via %s", ErrCheckFailed, ifName, wr.Dst.String(), wr.GW)
		}
	}
	return nil
}

func hasRoute(routes []netlink.Route, want *types.Route) bool {
	wdst, ok := ipNetToPrefix(want.Dst)
	if !ok {
		return false
	}
	for _, r := range routes {
		dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		if wdst.Addr().Is6() {
			dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
		if r.Dst != nil {
			if dst, ok = ipNetToPrefix(*r.Dst); !ok {
				continue
			}
		}
		if dst != wdst {
			continue
		}
		if want.GW == nil || want.GW.Equal(r.Gw) {
			return true
		}
	}
	return false
}

// ipNetToPrefix is the net → netip conversion at the CNI/netlink boundary.
func ipNetToPrefix(n net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := n.Mask.Size()
	if bits == 0 {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	if a.Is4() && bits == 128 {
		ones -= 96
	}
	return netip.PrefixFrom(a, ones), true
}

func slicesContainsPrefix(ps []netip.Prefix, s string) bool {
	want, err := netip.ParsePrefix(s)
	if err != nil {
		return false
	}
	for _, p := range ps {
		if p == want {
			return true
		}
	}
	return false
}
