package cni

// ADD, in order, each step undone on any later failure (newest first):
//   1. parse config and CNI_ARGS, open the pod's netns   (nothing to undo)
//   2. Allocate at the peer                               undo: Release
//   3. find the gateway bridge, create the veth           undo: delete veth
//   4. address, link up, gateway neighbour, default route in the pod,
//      the host's route and neighbour to the pod          (gone with the veth)
//   5. register POD.NAMESPACE in DNS                      (Release drops it)
//   6. print the result in the config's spec version

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	cnins "github.com/containernetworking/cni/pkg/ns"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/weftmesh/weft/api/client"
)

// Add attaches the container to weft's network.
func (p *Plugin) Add(args *skel.CmdArgs) error {
	inv, err := p.begin("ADD", args)
	if err != nil {
		return err
	}
	return inv.end(p.add(inv, args))
}

func (p *Plugin) add(inv *invocation, args *skel.CmdArgs) (err error) {
	podName, err := parsePodName(args.Args)
	if err != nil {
		return err
	}
	if args.Netns == "" {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_NETNS is empty", "ADD needs the pod's network namespace path")
	}
	netNS, err := ns.GetNS(args.Netns)
	if err != nil {
		return types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("open netns %q: %v", args.Netns, err), "CNI_NETNS must be a network namespace path")
	}
	defer netNS.Close()
	// skel checks this only after ADD succeeded; by then the host would
	// have been rewired. Refuse first.
	if same, cerr := cnins.CheckNetNS(args.Netns); cerr != nil {
		return cerr
	} else if same {
		return types.NewError(types.ErrInvalidNetNS, "CNI_NETNS "+args.Netns+" is the plugin's own network namespace", "pass the pod's namespace")
	}

	if inv.conf.Mode == ModeMacvlan {
		return p.addMacvlan(inv, args, netNS, podName)
	}

	var undo rollback
	defer func() { undo.run(err) }()

	id := allocID(args.ContainerID, args.IfName)
	alloc, err := inv.peer.Allocate(inv.ctx, client.AllocateRequest{ID: id, IfName: args.IfName, Pod: podName})
	if err != nil {
		return peerError("allocate address", inv.conf.Socket, err)
	}
	undo = append(undo, inv.releaseStep(id))
	addr, gw, err := parseAllocation(alloc)
	if err != nil {
		return cniError(types.ErrInternal, "allocate address", err)
	}
	inv.log.Debug("allocated", "id", id, "address", addr, "gateway", gw)

	brName := bridgeName(inv.conf, alloc)
	if _, err := lookupBridge(brName); err != nil {
		return cniError(types.ErrTryAgainLater, "attach pod", err)
	}
	mtu := inv.conf.MTU
	if mtu == 0 {
		mtu = alloc.MTU
	}
	hostName := hostVethName(args.ContainerID, args.IfName)
	// A leftover of an ADD that crashed half-way has the same name; it is ours.
	if err := deleteHostVeth(hostName); err != nil {
		return cniError(types.ErrInternal, "remove stale veth", err)
	}
	pod, err := podHandle(netNS.Fd())
	if err != nil {
		return cniError(types.ErrInternal, "attach pod", err)
	}
	defer pod.Close()
	links, err := setupVeth(hostName, args.IfName, mtu, pod, netNS.Fd())
	undo = append(undo, func() {
		if derr := deleteHostVeth(hostName); derr != nil {
			inv.log.Error("rollback: delete veth", "veth", hostName, "err", derr)
		}
	})
	if err != nil {
		return cniError(types.ErrInternal, "attach pod", err)
	}
	if err := configurePod(pod, links, addr, gw); err != nil {
		return cniError(types.ErrInternal, "configure pod interface "+args.IfName, err)
	}
	if err := routeToPod(links, addr); err != nil {
		return cniError(types.ErrInternal, "route to pod", err)
	}

	if podName != "" {
		req := client.DNSRequest{Name: podName, Address: addr.Addr().String(), ContainerID: id}
		if err := inv.peer.DNSAdd(inv.ctx, req); err != nil {
			return peerError("register DNS name "+podName, inv.conf.Socket, err)
		}
	}

	res := buildResult(links, args.Netns, addr, gw, alloc.DNS)
	out, err := res.GetAsVersion(inv.conf.CNIVersion)
	if err != nil {
		return cniError(types.ErrIncompatibleCNIVersion, "convert result", err)
	}
	if err := out.PrintTo(p.stdout); err != nil {
		return cniError(types.ErrIOFailure, "print result", err)
	}
	inv.log.Info("attached", "id", id, "address", addr, "veth", hostName, "bridge", brName, "mtu", mtu, "pod", podName)
	return nil
}

// rollbackTimeout bounds each undo step's call to the peer.
const rollbackTimeout = 10 * time.Second

// rollback is the undo steps of an ADD, in the order they were taken.
type rollback []func()

// run undoes every step, last first, when the ADD failed (err != nil).
func (r rollback) run(err error) {
	if err == nil {
		return
	}
	for i := len(r) - 1; i >= 0; i-- {
		r[i]()
	}
}

// releaseStep is the undo step of allocation id: its release, with a
// fresh context (the command's may be what expired).
func (inv *invocation) releaseStep(id string) func() {
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), rollbackTimeout)
		defer cancel()
		if err := inv.peer.Release(ctx, id); err != nil {
			inv.log.Error("rollback: release", "id", id, "err", err)
		}
	}
}

// bridgeName: the config's, else the peer's, else "weft".
func bridgeName(c *Config, a *client.Allocation) string {
	switch {
	case c.Bridge != "":
		return c.Bridge
	case a.Bridge != "":
		return a.Bridge
	}
	return DefaultBridge
}

// parseAllocation checks the peer's answer: an address with its prefix
// length and, if given, a gateway of the same family.
func parseAllocation(a *client.Allocation) (netip.Prefix, netip.Addr, error) {
	addr, err := netip.ParsePrefix(a.Address)
	if err != nil {
		return netip.Prefix{}, netip.Addr{}, fmt.Errorf("%w: address %q: %v", ErrBadAllocation, a.Address, err)
	}
	var gw netip.Addr
	if a.Gateway != "" {
		if gw, err = netip.ParseAddr(a.Gateway); err != nil {
			return netip.Prefix{}, netip.Addr{}, fmt.Errorf("%w: gateway %q: %v", ErrBadAllocation, a.Gateway, err)
		}
		if gw.Is4() != addr.Addr().Is4() {
			return netip.Prefix{}, netip.Addr{}, fmt.Errorf("%w: gateway %s and address %s differ in family", ErrBadAllocation, gw, addr)
		}
	}
	if a.MTU != 0 && (a.MTU < minMTU || a.MTU > maxMTU) {
		return netip.Prefix{}, netip.Addr{}, fmt.Errorf("%w: mtu %d", ErrBadAllocation, a.MTU)
	}
	return addr, gw, nil
}
