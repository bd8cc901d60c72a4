package router

// VXLAN transport.
//
// Every peer's VXLAN device has a MAC derived from its peer ID, so every
// other peer can compute it without asking. For each remote peer we install
//
//	route  <range>      via <peer bridge> dev weft-vx onlink src <our bridge>
//	neigh  <peer bridge> lladdr <peer VTEP MAC> dev weft-vx   (permanent)
//	fdb    <peer VTEP MAC> dst <peer underlay> dev weft-vx    (permanent)
//
// so a packet to a remote pod is routed to the peer's bridge address as next
// hop, that address resolves statically to the peer's VTEP MAC, and the MAC
// resolves statically to the peer's underlay address. Nothing is learned and
// nothing is flooded (learning off, no default all-zero FDB entry).
//
// Why no miss daemon (flannel's old L2/L3-miss handler, Weave's fastdp
// misses): every entry is known in advance from gossip — the peer set is the
// desired state the router already holds — so answering kernel miss events
// would only add first-packet latency, a netlink listener that must never
// stall, and, worst, a dependency of the datapath on a running control plane.
// Static entries keep forwarding while weft is restarted or killed, and the
// periodic resync restores any entry deleted by hand.

import (
	"encoding/binary"
	"net"

	"github.com/weftmesh/weft/peer"
)

// VTEPMAC returns the VXLAN device MAC of the peer with ID id: locally
// administered, unicast (first octet 0x?2 with the multicast bit clear), the
// other 40 bits from a mix of the ID so that nearby IDs differ everywhere.
func VTEPMAC(id peer.ID) net.HardwareAddr {
	x := uint64(id)
	// splitmix64 finaliser: a bijection, so distinct IDs rarely collide
	// after truncation to 40 bits.
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], x)
	return net.HardwareAddr{0x7e, b[3], b[4], b[5], b[6], b[7]}
}
