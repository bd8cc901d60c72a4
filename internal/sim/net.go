package sim

// The simulated network is gossip/gossiptest's in-memory memberlist
// network: one transport per peer, each at an address of its own
// (AddrOf(i):6783, so the router sees distinct underlay endpoints), with
// the cluster's latency and loss; partitions are its groups; it counts
// every byte a peer sends or receives.

import "net/netip"

// AddrOf returns the underlay address of the i-th peer.
func AddrOf(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 200, byte(i >> 8), byte(i)})
}
