package cni

// The pod's half of the datapath. The L3 arrangement is the router's: the
// pod gets its address with the ring's prefix length (10.32.0.5/12) and a
// default route via the bridge address; the bridge answers ARP for every
// address of the range (proxy ARP), so traffic to remote pods reaches the
// host, which routes it over the mesh. Nothing here knows about remote peers.
//
// Speed matters (kubelet starts pods in bursts), so the veth pair is made
// with ONE RTM_NEWLINK from the host namespace: the pod end is created
// directly inside the pod's namespace under its final name, the host end is
// already enslaved to the bridge and up. The pod end is then configured
// through a netlink socket opened in the pod's namespace: no goroutine ever
// switches namespaces, so there is no thread to lock or to throw away.

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// hostVethName is the host end's name: "wf" + 11 hex digits of a hash of
// the container ID and interface name. Deterministic, so DEL finds it
// without the pod's namespace, and ADD can remove a leftover of a crash.
func hostVethName(containerID, ifName string) string {
	sum := sha256.Sum256([]byte(containerID + ":" + ifName))
	return "wf" + hex.EncodeToString(sum[:])[:11]
}

// podLinks is what setupVeth made, for the result and for CHECK.
type podLinks struct {
	hostName  string
	hostMAC   net.HardwareAddr
	podName   string
	podMAC    net.HardwareAddr
	podIndex  int
	bridgeMAC net.HardwareAddr
}

// podHandle opens a netlink socket inside the namespace at fd. The caller
// closes it.
func podHandle(fd uintptr) (*netlink.Handle, error) {
	h, err := netlink.NewHandleAt(netns.NsHandle(int(fd)))
	if err != nil {
		return nil, fmt.Errorf("open netlink in pod netns: %w", err)
	}
	return h, nil
}

// lookupBridge returns the bridge pods attach to.
func lookupBridge(name string) (netlink.Link, error) {
	br, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, fmt.Errorf("%w: %q does not exist on this host: the weft peer creates it at 'weft launch'; check the conflist's \"bridge\"", ErrBridgeMissing, name)
		}
		return nil, fmt.Errorf("link %s: %w", name, err)
	}
	if br.Type() != "bridge" {
		return nil, fmt.Errorf("%w: %q is a %s, not a bridge", ErrBridgeMissing, name, br.Type())
	}
	return br, nil
}

// setupVeth creates the pair: hostName on the bridge and up, podIfName in
// the namespace at podFd, both with mtu bytes.
func setupVeth(hostName, podIfName string, br netlink.Link, mtu int, hairpin bool, pod *netlink.Handle, podFd uintptr) (*podLinks, error) {
	veth := &netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{
			Name:        hostName,
			MTU:         mtu,
			MasterIndex: br.Attrs().Index,
			Flags:       net.FlagUp,
			TxQLen:      -1,
		},
		PeerName:      podIfName,
		PeerMTU:       uint32(mtu),
		PeerNamespace: netlink.NsFd(int(podFd)),
		PeerTxQLen:    -1,
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("create veth %s (pod end %s) on bridge %s: %w", hostName, podIfName, br.Attrs().Name, err)
	}
	host, err := netlink.LinkByName(hostName)
	if err != nil {
		return nil, fmt.Errorf("link %s after create: %w", hostName, err)
	}
	if hairpin {
		if err := netlink.LinkSetHairpin(host, true); err != nil {
			return nil, fmt.Errorf("hairpin on %s: %w", hostName, err)
		}
	}
	pl, err := pod.LinkByName(podIfName)
	if err != nil {
		return nil, fmt.Errorf("link %s in pod netns: %w", podIfName, err)
	}
	return &podLinks{
		hostName: hostName, hostMAC: host.Attrs().HardwareAddr,
		podName: podIfName, podMAC: pl.Attrs().HardwareAddr, podIndex: pl.Attrs().Index,
		bridgeMAC: br.Attrs().HardwareAddr,
	}, nil
}

// configurePod gives the pod end its address, brings it up and routes
// everything via the gateway (on-link when outside the pod's prefix).
func configurePod(pod *netlink.Handle, index int, addr netip.Prefix, gw netip.Addr) error {
	link := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: index}}
	ipn := prefixToIPNet(addr)
	if err := pod.AddrAdd(link, &netlink.Addr{IPNet: ipn}); err != nil {
		return fmt.Errorf("address add %s: %w", addr, err)
	}
	if err := pod.LinkSetUp(link); err != nil {
		return fmt.Errorf("link set up: %w", err)
	}
	if !gw.IsValid() {
		return nil
	}
	r := &netlink.Route{LinkIndex: index, Gw: net.IP(gw.AsSlice()), Dst: defaultDst(gw)}
	if !addr.Masked().Contains(gw) {
		r.Flags = int(netlink.FLAG_ONLINK)
	}
	if err := pod.RouteAdd(r); err != nil {
		return fmt.Errorf("route add default via %s: %w", gw, err)
	}
	return nil
}

// deleteHostVeth removes the pair by its host end; a missing link is fine
// (DEL is idempotent and the kernel drops the pair with the pod's netns).
func deleteHostVeth(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("link %s: %w", name, err)
	}
	if l.Type() != "veth" {
		return fmt.Errorf("link %s is a %s, not weft's veth: remove it by hand", name, l.Type())
	}
	if err := netlink.LinkDel(l); err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("delete veth %s: %w", name, err)
	}
	return nil
}

// prefixToIPNet is the one netip → net conversion at the netlink boundary.
func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// defaultDst is 0.0.0.0/0 or ::/0 in the gateway's family.
func defaultDst(gw netip.Addr) *net.IPNet {
	if gw.Is4() {
		return &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	}
	return &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
}
