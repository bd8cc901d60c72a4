package cni

// DEL must succeed whenever the pod's network is gone or going: with an
// empty CNI_NETNS (containerd's second DEL after the netns is removed), a
// netns that no longer exists, an unknown container, a second call, and
// when the peer is down. The veth is found by its deterministic host name,
// so DEL never needs to enter the pod's namespace. A release the peer
// cannot take now is spooled (package cni/spool) and applied at its start.

import (
	"errors"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/weftmesh/weft/api/client"
	"github.com/weftmesh/weft/cni/spool"
)

// Del detaches the container and releases its address.
func (p *Plugin) Del(args *skel.CmdArgs) error {
	inv, err := p.begin("DEL", args)
	if err != nil {
		return err
	}
	return inv.end(p.del(inv, args))
}

func (p *Plugin) del(inv *invocation, args *skel.CmdArgs) error {
	hostName := hostVethName(args.ContainerID, args.IfName)
	if inv.conf.Mode == ModeMacvlan {
		if err := delMacvlanLink(args.Netns, args.IfName); err != nil {
			return cniError(types.ErrInternal, "detach pod", err)
		}
	} else if err := deleteHostVeth(hostName); err != nil {
		return cniError(types.ErrInternal, "detach pod", err)
	}
	id := allocID(args.ContainerID, args.IfName)
	err := inv.peer.Release(inv.ctx, id)
	switch {
	case err == nil, errors.Is(err, client.ErrNotFound):
		inv.log.Info("released", "id", id, "veth", hostName)
		return nil
	case errors.Is(err, client.ErrNotRunning), errors.Is(err, client.ErrPeerGone):
		// A peer killed while it served the release may or may not have
		// applied it; the replay of an applied release is a no-op.
		dir := spool.Dir(inv.conf.DataDir)
		if serr := spool.Write(dir, id); serr != nil {
			return types.NewError(types.ErrTryAgainLater,
				"release "+id+": weft peer not running at "+inv.conf.Socket+" and the release could not be spooled: "+serr.Error(),
				"start the peer with 'weft launch' or make "+dir+" writable")
		}
		inv.log.Warn("peer not running; release spooled", "id", id, "spool", dir)
		return nil
	}
	return peerError("release "+id, inv.conf.Socket, err)
}

// Status reports whether the peer can serve pods: CNI error 50 when it is
// not running or not ready, with the reason.
func (p *Plugin) Status(args *skel.CmdArgs) error {
	inv, err := p.begin("STATUS", args)
	if err != nil {
		return err
	}
	return inv.end(p.status(inv))
}

func (p *Plugin) status(inv *invocation) error {
	r, err := inv.peer.Ready(inv.ctx)
	if errors.Is(err, client.ErrNotRunning) {
		return types.NewError(types.ErrPluginNotAvailable,
			"weft peer not running at "+inv.conf.Socket+": start it with 'weft launch'", err.Error())
	}
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "weft peer at "+inv.conf.Socket+" did not answer: "+err.Error(), "see 'weft status'")
	}
	if !r.Ready {
		reason := r.Reason
		if reason == "" {
			reason = "no reason given"
		}
		return types.NewError(types.ErrPluginNotAvailable, "weft peer not ready: "+reason, "see 'weft status'")
	}
	return nil
}

// GC releases the peer's allocations of attachments the runtime no longer
// knows (everything not in cni.dev/valid-attachments).
func (p *Plugin) GC(args *skel.CmdArgs) error {
	inv, err := p.begin("GC", args)
	if err != nil {
		return err
	}
	return inv.end(p.gc(inv))
}

func (p *Plugin) gc(inv *invocation) error {
	keep := make([]string, 0, len(inv.conf.ValidAttachments))
	for _, a := range inv.conf.ValidAttachments {
		keep = append(keep, allocID(a.ContainerID, a.IfName))
	}
	r, err := inv.peer.GC(inv.ctx, keep)
	if err != nil {
		return peerError("garbage-collect allocations", inv.conf.Socket, err)
	}
	inv.log.Info("gc", "kept", len(keep), "released", r.Released)
	return nil
}
