package cni

// Macvlan mode ("mode": "macvlan"): the pod sits on the LAN with its own
// MAC, on a macvlan (bridge mode) of the master device, with an address of
// the LAN's subnet from the peer's underlay pool (a second ring, see
// daemon/underlay.go). No veth, no host route from the plugin: the peer's
// router keeps the host side (weft-mv and a /32 route per local macvlan
// pod, router/underlay.go), because macvlan isolates the parent from its
// children and kubelet probes come from the host.
//
// ADD, each step undone on a later failure (newest first):
//   1. the master exists (config's, else checked after the allocation)
//   2. Allocate from the underlay pool                 undo: Release
//   3. create the macvlan directly in the pod's netns  undo: delete it
//   4. address ADDR/<subnet length>, up; default route via the LAN
//      gateway (if known); the pod range via the host's weft-mv address
//   5. register POD.NAMESPACE in DNS                   (Release drops it)
//
// DEL deletes the pod's interface when its netns still exists (the kernel
// drops it with the netns otherwise) and releases the address from both
// pools, spooling the release while the peer is down, like the routed DEL.

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/weftmesh/weft/api/client"
)

// Modes of Config.Mode.
const (
	ModeRouted  = "routed"  // the default: a routed veth behind the bridge, the pod range
	ModeMacvlan = "macvlan" // a macvlan on the LAN, the underlay range
)

// ErrMasterMissing means the macvlan master device does not exist.
var ErrMasterMissing = errors.New("macvlan master missing")

// macvlanAlloc is a checked underlay allocation.
type macvlanAlloc struct {
	addr     netip.Prefix // with the LAN subnet's length
	gw       netip.Addr   // invalid = no default route
	host     netip.Addr   // weft-mv's address
	podRange netip.Prefix // routed via host
}

// parseMacvlanAllocation checks the peer's answer for a macvlan pod.
func parseMacvlanAllocation(a *client.Allocation) (macvlanAlloc, error) {
	addr, gw, err := parseAllocation(a)
	if err != nil {
		return macvlanAlloc{}, err
	}
	m := macvlanAlloc{addr: addr, gw: gw}
	if a.Pool != client.PoolUnderlay {
		return m, fmt.Errorf("%w: pool %q, want %q", ErrBadAllocation, a.Pool, client.PoolUnderlay)
	}
	if gw.IsValid() && !addr.Masked().Contains(gw) {
		return m, fmt.Errorf("%w: gateway %s outside the LAN subnet %s", ErrBadAllocation, gw, addr.Masked())
	}
	if m.host, err = netip.ParseAddr(a.HostAddress); err != nil {
		return m, fmt.Errorf("%w: the host's macvlan address %q: the peer has not set up its macvlan interface yet", ErrBadAllocation, a.HostAddress)
	}
	if !addr.Masked().Contains(m.host) {
		return m, fmt.Errorf("%w: host address %s outside the LAN subnet %s", ErrBadAllocation, m.host, addr.Masked())
	}
	if m.podRange, err = netip.ParsePrefix(a.PodRange); err != nil {
		return m, fmt.Errorf("%w: pod range %q: %v", ErrBadAllocation, a.PodRange, err)
	}
	return m, nil
}

// lookupMaster returns the macvlan master device.
func lookupMaster(name string) (netlink.Link, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, fmt.Errorf("%w: %q does not exist on this host", ErrMasterMissing, name)
		}
		return nil, fmt.Errorf("link %s: %w", name, err)
	}
	return l, nil
}

func (p *Plugin) addMacvlan(inv *invocation, args *skel.CmdArgs, netNS ns.NetNS, podName string) (err error) {
	var undo rollback
	defer func() { undo.run(err) }()
	if inv.conf.Master != "" {
		if _, err := lookupMaster(inv.conf.Master); err != nil {
			return types.NewError(types.ErrInvalidNetworkConfig, "macvlan: "+err.Error(),
				"fix \"master\" in the conflist, or leave it out to use the interface of the peer's underlay address")
		}
	}
	id := allocID(args.ContainerID, args.IfName)
	alloc, err := inv.peer.Allocate(inv.ctx, client.AllocateRequest{ID: id, IfName: args.IfName, Pod: podName, Pool: client.PoolUnderlay})
	var ae *client.APIError
	if errors.As(err, &ae) && ae.Status == http.StatusBadRequest {
		// The peer cannot serve this config (no underlay range): the
		// network config asks for what the node does not offer.
		return types.NewError(types.ErrInvalidNetworkConfig, "allocate underlay address: "+ae.Message,
			"launch the peer with --underlay-range, or drop \"mode\": \"macvlan\" from the conflist")
	}
	if err != nil {
		return peerError("allocate underlay address", inv.conf.Socket, err)
	}
	undo = append(undo, inv.releaseStep(id))
	m, err := parseMacvlanAllocation(alloc)
	if err != nil {
		return cniError(types.ErrTryAgainLater, "allocate underlay address", err)
	}
	masterName := inv.conf.Master
	if masterName == "" {
		masterName = alloc.Master
	}
	master, err := lookupMaster(masterName)
	if err != nil {
		return cniError(types.ErrInvalidNetworkConfig, "macvlan", err)
	}
	pod, err := podHandle(netNS.Fd())
	if err != nil {
		return cniError(types.ErrInternal, "attach pod", err)
	}
	defer pod.Close()
	mtu := inv.conf.MTU
	if mtu == 0 {
		mtu = master.Attrs().MTU
	}
	mv := &netlink.Macvlan{
		LinkAttrs: netlink.LinkAttrs{Name: args.IfName, MTU: mtu, ParentIndex: master.Attrs().Index,
			Namespace: netlink.NsFd(int(netNS.Fd())), TxQLen: -1},
		Mode: netlink.MACVLAN_MODE_BRIDGE,
	}
	if err := netlink.LinkAdd(mv); err != nil {
		return cniError(types.ErrInternal, "attach pod", fmt.Errorf("create macvlan %s on %s in the pod: %w", args.IfName, masterName, err))
	}
	undo = append(undo, func() {
		if derr := deletePodMacvlan(pod, args.IfName); derr != nil {
			inv.log.Error("rollback: delete macvlan", "ifname", args.IfName, "err", derr)
		}
	})
	link, err := pod.LinkByName(args.IfName)
	if err != nil {
		return cniError(types.ErrInternal, "attach pod", fmt.Errorf("macvlan %s in the pod: %w", args.IfName, err))
	}
	if err := configureMacvlan(pod, link, m); err != nil {
		return cniError(types.ErrInternal, "configure pod interface "+args.IfName, err)
	}
	if podName != "" {
		req := client.DNSRequest{Name: podName, Address: m.addr.Addr().String(), ContainerID: id}
		if err := inv.peer.DNSAdd(inv.ctx, req); err != nil {
			return peerError("register DNS name "+podName, inv.conf.Socket, err)
		}
	}
	res := macvlanResult(args.IfName, link.Attrs().HardwareAddr, args.Netns, m, alloc.DNS)
	out, err := res.GetAsVersion(inv.conf.CNIVersion)
	if err != nil {
		return cniError(types.ErrIncompatibleCNIVersion, "convert result", err)
	}
	if err := out.PrintTo(p.stdout); err != nil {
		return cniError(types.ErrIOFailure, "print result", err)
	}
	inv.log.Info("attached", "id", id, "mode", ModeMacvlan, "address", m.addr, "master", masterName, "mtu", mtu, "pod", podName)
	return nil
}

// configureMacvlan gives the pod's macvlan its address and routes.
func configureMacvlan(pod *netlink.Handle, link netlink.Link, m macvlanAlloc) error {
	if err := pod.AddrAdd(link, &netlink.Addr{IPNet: prefixToIPNet(m.addr)}); err != nil {
		return fmt.Errorf("address add %s: %w", m.addr, err)
	}
	if err := pod.LinkSetUp(link); err != nil {
		return fmt.Errorf("link set up: %w", err)
	}
	for _, r := range macvlanRoutes(m) {
		nr := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: &r.Dst, Gw: r.GW}
		if err := pod.RouteAdd(nr); err != nil {
			return fmt.Errorf("route add %s via %s: %w", r.Dst.String(), r.GW, err)
		}
	}
	return nil
}

// macvlanRoutes are the pod's routes besides the subnet's: the default
// route via the LAN gateway (when known) and the pod range via the host.
func macvlanRoutes(m macvlanAlloc) []types.Route {
	var out []types.Route
	if m.gw.IsValid() {
		out = append(out, types.Route{Dst: *defaultDst(m.gw), GW: net.IP(m.gw.AsSlice())})
	}
	if m.podRange.IsValid() && m.host.IsValid() {
		out = append(out, types.Route{Dst: *prefixToIPNet(m.podRange.Masked()), GW: net.IP(m.host.AsSlice())})
	}
	return out
}

// macvlanResult is the spec result of a macvlan ADD.
func macvlanResult(ifName string, mac net.HardwareAddr, netnsPath string, m macvlanAlloc, dns *client.PodDNS) *current.Result {
	podIf := 0
	ipc := &current.IPConfig{Interface: &podIf, Address: *prefixToIPNet(m.addr)}
	if m.gw.IsValid() {
		ipc.Gateway = net.IP(m.gw.AsSlice())
	}
	res := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{Name: ifName, Mac: mac.String(), Sandbox: netnsPath}},
		IPs:        []*current.IPConfig{ipc},
	}
	for _, r := range macvlanRoutes(m) {
		res.Routes = append(res.Routes, &types.Route{Dst: r.Dst, GW: r.GW})
	}
	if dns != nil {
		res.DNS = types.DNS{Nameservers: dns.Nameservers, Domain: dns.Domain, Search: dns.Search}
	}
	return res
}

// deletePodMacvlan removes the pod's interface if it is a macvlan; a
// missing one is fine.
func deletePodMacvlan(pod *netlink.Handle, ifName string) error {
	l, err := pod.LinkByName(ifName)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("link %s in pod: %w", ifName, err)
	}
	if l.Type() != "macvlan" {
		return fmt.Errorf("link %s in the pod is a %s, not weft's macvlan", ifName, l.Type())
	}
	if err := pod.LinkDel(l); err != nil {
		return fmt.Errorf("delete macvlan %s: %w", ifName, err)
	}
	return nil
}

// delMacvlanLink removes the pod's macvlan when its netns still exists.
func delMacvlanLink(netnsPath, ifName string) error {
	if netnsPath == "" {
		return nil
	}
	netNS, err := ns.GetNS(netnsPath)
	if err != nil {
		return nil // the netns is gone, and the macvlan with it
	}
	defer netNS.Close()
	pod, err := podHandle(netNS.Fd())
	if err != nil {
		return err
	}
	defer pod.Close()
	return deletePodMacvlan(pod, ifName)
}

// checkMacvlan verifies a macvlan pod against prevResult.
func checkMacvlan(pod *netlink.Handle, ifName string, want *podState) error {
	l, err := pod.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("%w: %s in pod: %v", ErrCheckFailed, ifName, err)
	}
	if l.Type() != "macvlan" {
		return fmt.Errorf("%w: %s is a %s, not a macvlan", ErrCheckFailed, ifName, l.Type())
	}
	return checkPod(pod, ifName, want)
}
