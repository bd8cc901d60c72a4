package cni

// The pod's half of the datapath. Pods are attached routed, the way Calico
// attaches them: the host end of the veth is NOT a bridge port. The host
// routes the pod's address to it (ADDR/32 dev wfXXX, protocol 158) and
// answers ARP on it for every other address (proxy ARP, no delay), so the pod keeps the ring's prefix length (10.32.0.5/12)
// and its default route via the bridge address: the bridge `weft` holds the
// gateway address, the pod has a permanent neighbour entry for it (so the
// gateway works even where the host sets arp_ignore=1, as kube-proxy's
// strict ARP does) and the host a permanent one for the pod. Nothing here
// knows about remote peers.
//
// Why not bridge ports: a bridge hop on each host cost 5-9 % of pod-to-pod
// TCP throughput on the test machine (scripts/bench-datapath.sh against raw
// host-gw routes); the routed veth is the raw path. A pod reaching itself
// through a service address needs no hairpin: it is routed back out the
// same veth.
//
// Speed matters (kubelet starts pods in bursts), so the veth pair is made
// with ONE RTM_NEWLINK from the host namespace: the pod end is created
// directly inside the pod's namespace under its final name, the host end is
// already up. The pod end is then configured through a netlink socket opened
// in the pod's namespace: no goroutine ever switches namespaces, so there is
// no thread to lock or to throw away.

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// PodRouteProtocol marks the host's route to each pod (`ip route show proto
// 158`). The router owns protocol 157 and removes such routes it did not
// plan; these belong to the pod's attachment and go with its veth.
const PodRouteProtocol = 158

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
	hostIndex int
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

// lookupBridge returns the bridge that holds the pods' gateway address; its
// presence says the peer has set this host up.
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

// setupVeth creates the pair: hostName up in this namespace, podIfName in
// the namespace at podFd, both with mtu bytes, and makes the host end a
// routed port (proxy ARP without delay).
func setupVeth(hostName, podIfName string, mtu int, pod *netlink.Handle, podFd uintptr) (*podLinks, error) {
	veth := &netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{
			Name:   hostName,
			MTU:    mtu,
			Flags:  net.FlagUp,
			TxQLen: -1,
		},
		PeerName:      podIfName,
		PeerMTU:       uint32(mtu),
		PeerNamespace: netlink.NsFd(int(podFd)),
		PeerTxQLen:    -1,
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("create veth %s (pod end %s): %w", hostName, podIfName, err)
	}
	host, err := netlink.LinkByName(hostName)
	if err != nil {
		return nil, fmt.Errorf("link %s after create: %w", hostName, err)
	}
	for _, s := range hostSysctls(hostName) {
		if err := os.WriteFile(s.path, []byte(s.value), 0o644); err != nil {
			return nil, fmt.Errorf("sysctl %s: %w", s.path, err)
		}
	}
	pl, err := pod.LinkByName(podIfName)
	if err != nil {
		return nil, fmt.Errorf("link %s in pod netns: %w", podIfName, err)
	}
	return &podLinks{
		hostName: hostName, hostMAC: host.Attrs().HardwareAddr, hostIndex: host.Attrs().Index,
		podName: podIfName, podMAC: pl.Attrs().HardwareAddr, podIndex: pl.Attrs().Index,
	}, nil
}

// sysctlFile is one /proc/sys file and the value it must hold.
type sysctlFile struct{ path, value string }

// hostSysctls are the host end's settings: answer ARP for every address
// routed elsewhere, at once (the default proxy_delay holds answers back up
// to 0.8 s).
func hostSysctls(hostName string) []sysctlFile {
	return []sysctlFile{
		{"/proc/sys/net/ipv4/conf/" + hostName + "/proxy_arp", "1"},
		{"/proc/sys/net/ipv4/neigh/" + hostName + "/proxy_delay", "0"},
	}
}

// routeToPod routes the pod's address to the host end and pins the pod's
// MAC there. The route names no source: the bridge may not hold its address
// yet when kubelet starts the first pods, and any host address works for
// the host's own packets to the pod.
func routeToPod(l *podLinks, addr netip.Prefix) error {
	host := netip.PrefixFrom(addr.Addr(), addr.Addr().BitLen())
	r := &netlink.Route{LinkIndex: l.hostIndex, Dst: prefixToIPNet(host), Scope: netlink.SCOPE_LINK,
		Protocol: PodRouteProtocol, Table: unix.RT_TABLE_MAIN}
	if err := netlink.RouteReplace(r); err != nil {
		return fmt.Errorf("route %s dev %s: %w", host, l.hostName, err)
	}
	n := &netlink.Neigh{LinkIndex: l.hostIndex, Family: family(addr.Addr()), State: netlink.NUD_PERMANENT,
		IP: net.IP(addr.Addr().AsSlice()), HardwareAddr: l.podMAC}
	if err := netlink.NeighSet(n); err != nil {
		return fmt.Errorf("neighbour %s on %s: %w", addr.Addr(), l.hostName, err)
	}
	return nil
}

// family is the netlink address family of a.
func family(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// configurePod gives the pod end its address, brings it up, pins the
// gateway to the host end's MAC and routes everything via the gateway
// (on-link when outside the pod's prefix).
func configurePod(pod *netlink.Handle, l *podLinks, addr netip.Prefix, gw netip.Addr) error {
	index := l.podIndex // the pod end, in the pod's namespace
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
	n := &netlink.Neigh{LinkIndex: index, Family: family(gw), State: netlink.NUD_PERMANENT,
		IP: net.IP(gw.AsSlice()), HardwareAddr: l.hostMAC}
	if err := pod.NeighSet(n); err != nil {
		return fmt.Errorf("gateway neighbour %s: %w", gw, err)
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
