package router

// MTU arithmetic.
//
// The pod MTU is the underlay device's MTU minus the bytes each transport
// adds per packet, so that an encapsulated full-size pod packet still fits in
// one underlay frame (fragmentation of tunnel packets halves throughput):
//
//	WireGuard/IPv4: 20 IP + 8 UDP + 32 WireGuard (16 header + 16 tag) = 60
//	WireGuard/IPv6: 40 IP + 8 UDP + 32                                  = 80
//	VXLAN/IPv4:     20 IP + 8 UDP + 8 VXLAN + 14 inner Ethernet          = 50
//	VXLAN/IPv6:     40 IP + 8 UDP + 8 VXLAN + 14                         = 70
//	direct:         0
//
// With --transport auto and --insecure a peer may be reached directly or over
// VXLAN, and a pod cannot know which, so the pod MTU is the smaller (VXLAN)
// one. An explicit MTU overrides everything. The bridge and the tunnel
// devices get the same MTU as the pods.

// defaultUnderlayMTU is assumed when the underlay device cannot be found.
const defaultUnderlayMTU = 1500

// overhead returns the encapsulation bytes of the transports cfg may use.
func overhead(cfg Config, ipv6 bool) int {
	switch {
	case cfg.uses(TransportWireGuard):
		if ipv6 {
			return 80
		}
		return 60
	case cfg.uses(TransportVXLAN):
		if ipv6 {
			return 70
		}
		return 50
	}
	return 0
}

// podMTU returns the pod MTU under cfg on an underlay device of MTU
// underlayMTU (0 = unknown).
func podMTU(cfg Config, underlayMTU int) int {
	if cfg.MTU != 0 {
		return cfg.MTU
	}
	if underlayMTU <= 0 {
		underlayMTU = defaultUnderlayMTU
	}
	return underlayMTU - overhead(cfg, cfg.Underlay.Is6() && !cfg.Underlay.Is4In6())
}
