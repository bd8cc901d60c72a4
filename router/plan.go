package router

// Desired state.
//
// makePlan turns a Config (plus what the host's underlay looks like) into the
// exact set of devices, addresses, routes, neighbours, FDB entries,
// WireGuard peers, sysctls and the masquerade range the kernel should hold.
// It is a pure function: reconcile.go compares its result with the kernel.
//
// L3 arrangement (the CNI plugin relies on it): pods get addr/<range length>
// and a default route via the bridge address. The bridge holds the bridge
// address with IFA_F_NOPREFIXROUTE (no connected /12 route: most of the
// range is elsewhere). weft-cni attaches pods routed, not as bridge ports:
// a /32 route to each pod over its veth (protocol 158, the plugin's, never
// touched here) and proxy ARP on the host end, so the host answers the pod
// for every address it routes elsewhere. The bridge keeps proxy_arp=1
// (proxy_delay=0) for containers attached to it by hand: a local one
// answers for itself, the host for the rest. Routes, all with src = bridge
// address and protocol RouteProtocol:
//
//	each local range       dev weft (scope link)
//	each remote range and
//	the peer's bridge /32  by transport (wireguard.go, vxlan.go, direct below)
//	the whole range        unreachable (lowest precedence: a packet for an
//	                       address nobody owns gets ICMP unreachable instead
//	                       of leaking to the default route unmasqueraded)
//
// A peer that this one and that peer both report unreachable directly is
// relayed (paths.go): its ranges and bridge /32 are routed exactly like
// those of its next hop (under WireGuard they join the next hop's
// AllowedIPs), and its own WireGuard peer stays, without AllowedIPs.
//
// direct: `via <peer underlay> dev <underlay dev>`, only for peers inside our
// underlay subnet (an off-link gateway is not a valid next hop); with
// --transport auto those peers use direct and the others VXLAN.
//
// rp_filter is set loose (2) on the bridge and tunnel devices: during churn a
// reverse route can briefly point at another device than the packet came in
// on (a range that moved, a transport switch), and strict mode would drop
// established flows. ip_forward=1 because the host routes between bridge,
// tunnels and underlay.

import (
	"cmp"
	"net/netip"
	"slices"

	"github.com/weftmesh/weft/peer"
)

// sysctl is one key=value.
type sysctl struct{ key, value string }

// plan is the desired kernel state for one Config.
type plan struct {
	mtu       int
	bridge    Link
	vxlan     *Link // nil = no VXLAN device
	wireguard bool  // a WireGuard device is wanted
	addr      netip.Prefix
	// tunAddr is the bridge address as a /32 on the tunnel devices
	// (WireGuard, VXLAN): what the host sends or forwards into the mesh
	// after a masquerade (kube-proxy's NodePort SNAT picks the address of
	// the outgoing device, not the route's src) then carries a source
	// inside this peer's own ranges, which the other peers' WireGuard
	// AllowedIPs accept and route back. Invalid = none.
	tunAddr    netip.Prefix
	local      *Link        // the device of Config.LocalAddr; nil = none
	localAddr  netip.Prefix // Config.LocalAddr as a /32
	routes     []Route
	neighs     []Neigh
	fdbs       []FDB
	wgPeers    []WGPeer // sorted by public key
	transports map[peer.ID]string
	via        map[peer.ID]peer.ID // relayed peer → its relay (paths.go)
	sysctls    []sysctl
	masq       netip.Prefix // invalid = no masquerade
}

// makePlan computes the desired state. u is the underlay device (zero when
// unknown).
func makePlan(cfg Config, u Underlay) plan {
	p := plan{mtu: podMTU(cfg, u.MTU), transports: map[peer.ID]string{}, via: map[peer.ID]peer.ID{}}
	p.bridge = Link{Name: cfg.Bridge, Kind: "bridge", MTU: p.mtu, Up: true}
	p.sysctls = []sysctl{
		{"net/ipv4/ip_forward", "1"},
		{"net/ipv4/conf/" + cfg.Bridge + "/proxy_arp", "1"},
		{"net/ipv4/neigh/" + cfg.Bridge + "/proxy_delay", "0"},
		{"net/ipv4/conf/" + cfg.Bridge + "/rp_filter", "2"},
	}
	if cfg.uses(TransportVXLAN) {
		// Without a known underlay address the kernel picks the source
		// address of the encapsulated packets by route.
		local := netip.Addr{}
		if knownUnderlay(cfg) {
			local = cfg.Underlay
		}
		p.vxlan = &Link{Name: cfg.VXIface, Kind: "vxlan", MTU: p.mtu, Up: true,
			HardwareAddr: VTEPMAC(cfg.ID),
			VXLAN:        VXLAN{VNI: cfg.VNI, Port: cfg.VXPort, Local: local}}
		p.sysctls = append(p.sysctls, sysctl{"net/ipv4/conf/" + cfg.VXIface + "/rp_filter", "2"})
	}
	if cfg.uses(TransportWireGuard) {
		p.wireguard = true
		p.sysctls = append(p.sysctls, sysctl{"net/ipv4/conf/" + cfg.WGIface + "/rp_filter", "2"})
	}
	if cfg.Masquerade {
		p.masq = cfg.Range.Masked()
	}
	if cfg.LocalAddr.IsValid() {
		p.local = &Link{Name: cfg.LocalIface, Kind: "dummy", MTU: 1500, Up: true}
		p.localAddr = netip.PrefixFrom(cfg.LocalAddr, 32)
	}
	src := cfg.BridgeAddr.Addr()
	if cfg.BridgeAddr.IsValid() {
		n := len(cfg.Local) + 1 // and the range's unreachable route
		for _, pr := range cfg.Peers {
			n += len(pr.Ranges) + 1 // its ranges and bridge /32 (peerDsts)
		}
		p.routes = make([]Route, 0, n)
	}
	addRoute := func(r Route) { // the first route added to a destination wins (below)
		if !cfg.BridgeAddr.IsValid() {
			return
		}
		if !r.Unreachable {
			r.Src = src
		}
		p.routes = append(p.routes, r)
	}
	if cfg.BridgeAddr.IsValid() {
		p.addr = cfg.BridgeAddr
		p.tunAddr = netip.PrefixFrom(cfg.BridgeAddr.Addr(), 32)
	}
	for _, l := range cfg.Local {
		addRoute(Route{Dst: l.Masked(), Dev: cfg.Bridge})
	}

	peers := cfg.Peers // sorted by record, the only caller's source
	if !slices.IsSortedFunc(peers, byPeerID) {
		peers = slices.Clone(peers)
		slices.SortFunc(peers, byPeerID)
	}
	for _, pr := range peers {
		p.transports[pr.ID] = peerTransport(cfg, u, pr)
	}
	// Relays (paths.go): a peer this one cannot reach directly is routed
	// like its next hop, whose WireGuard AllowedIPs grow by what it relays.
	hops := nextHops(cfg, peers)
	relayed := map[peer.ID][]netip.Prefix{}  // relay → the destinations it carries for us
	accepted := map[peer.ID][]netip.Prefix{} // relay → underlay ranges it carries (accepted, never routed)
	for _, pr := range peers {
		h, ok := hops[pr.ID]
		if !ok || h == pr.ID || p.transports[h] == TransportNone {
			continue
		}
		p.via[pr.ID] = h
		relayed[h] = append(relayed[h], peerDsts(pr)...)
		accepted[h] = append(accepted[h], pr.Accept...)
	}
	for _, pr := range peers {
		t := p.transports[pr.ID]
		dsts := peerDsts(pr)
		if _, ok := p.via[pr.ID]; ok {
			dsts = nil // routed through the relay, below
		}
		dsts = append(dsts, relayed[pr.ID]...)
		switch t {
		case TransportWireGuard:
			// A relayed peer keeps its WireGuard peer, with no AllowedIPs:
			// its keepalives and handshakes go on probing the direct path,
			// and it is back to direct as soon as that heals.
			wp := wgPeer(cfg, pr)
			accept := accepted[pr.ID] // underlay ranges: accepted from the peer, never routed (underlay.go)
			if _, ok := p.via[pr.ID]; !ok {
				accept = append(accept, pr.Accept...)
			}
			wp.AllowedIPs = canonPrefixes(append(slices.Clone(dsts), accept...))
			p.wgPeers = append(p.wgPeers, wp)
			for _, d := range dsts {
				addRoute(Route{Dst: d, Dev: cfg.WGIface})
			}
		case TransportVXLAN:
			mac := VTEPMAC(pr.ID)
			p.neighs = append(p.neighs, Neigh{Dev: cfg.VXIface, IP: pr.Bridge, MAC: mac})
			p.fdbs = append(p.fdbs, FDB{Dev: cfg.VXIface, MAC: mac, Dst: pr.Underlay})
			for _, d := range dsts {
				addRoute(Route{Dst: d, Gw: pr.Bridge, Dev: cfg.VXIface, OnLink: true})
			}
		case TransportDirect:
			for _, d := range dsts {
				addRoute(Route{Dst: d, Gw: pr.Underlay, Dev: u.Dev})
			}
		}
	}
	addRoute(Route{Dst: cfg.Range.Masked(), Unreachable: true})
	// One route per destination: the first added (the local ranges before
	// the peers', the range's unreachable route last). A stable sort keeps
	// the order of addition among routes to one destination.
	p.routes = onePerDst(p.routes)
	slices.SortFunc(p.wgPeers, func(a, b WGPeer) int { return cmp.Compare(a.PublicKey, b.PublicKey) })
	slices.SortFunc(p.neighs, byNeighIP) // as the diffs want them (diffSorted)
	slices.SortFunc(p.fdbs, byFDB)
	return p
}

// onePerDst returns routes sorted by destination with one route to each,
// the first in routes' order. It may reorder routes.
//
// It sorts the routes' positions, not the routes: a Route is ~100 bytes,
// and the stable sort it used (insertion sorts and in-place merges,
// O(n log² n) moves of whole routes) was 6 % of a 500-peer simulated
// join's CPU, every pass of every peer sorting ~2N routes.
func onePerDst(routes []Route) []Route {
	sameDst := func(a, b Route) bool { return a.Dst == b.Dst }
	if slices.IsSortedFunc(routes, byDst) {
		return slices.CompactFunc(routes, sameDst)
	}
	order := make([]int32, len(routes))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortFunc(order, func(a, b int32) int {
		if c := byDst(routes[a], routes[b]); c != 0 {
			return c
		}
		return cmp.Compare(a, b) // the first added first
	})
	out := make([]Route, 0, len(routes))
	for _, i := range order {
		if n := len(out); n > 0 && sameDst(out[n-1], routes[i]) {
			continue
		}
		out = append(out, routes[i])
	}
	return out
}

// byPeerID orders peers by ID, as plans take them.
func byPeerID(a, b Peer) int { return cmp.Compare(a.ID, b.ID) }

// peerDsts are the destinations that belong to pr: its ranges and its
// bridge /32.
func peerDsts(pr Peer) []netip.Prefix {
	dsts := make([]netip.Prefix, 0, len(pr.Ranges)+1)
	for _, r := range pr.Ranges {
		dsts = append(dsts, r.Masked())
	}
	if pr.Bridge.IsValid() {
		dsts = append(dsts, netip.PrefixFrom(pr.Bridge, 32))
	}
	return dsts
}

// nextHops runs the route computation (paths.go) over cfg's peers and
// the adjacency they and this peer report. peers is sorted by ID.
func nextHops(cfg Config, peers []Peer) map[peer.ID]peer.ID {
	ids := make([]peer.ID, 0, len(peers))
	adj := Adjacency{}
	if len(cfg.Unreachable) > 0 {
		adj[cfg.ID] = cfg.Unreachable
	}
	for _, pr := range peers {
		ids = append(ids, pr.ID)
		if len(pr.Unreachable) > 0 {
			adj[pr.ID] = pr.Unreachable
		}
	}
	if len(adj) == 0 {
		return nil // everything direct: skip the work
	}
	return NextHops(cfg.ID, ids, adj)
}

// canonPrefixes sorts and dedups a prefix list.
func canonPrefixes(ps []netip.Prefix) []netip.Prefix {
	out := slices.Clone(ps)
	slices.SortFunc(out, comparePrefix)
	return slices.Compact(out)
}

// knownUnderlay reports whether cfg names this host's underlay address
// (not unset, not the wildcard a listener may be bound to).
func knownUnderlay(cfg Config) bool {
	return cfg.Underlay.IsValid() && !cfg.Underlay.IsUnspecified()
}

// TransportNone is reported for a peer that cannot be reached with the
// configured transport (no key, no underlay address, not on-link for direct).
const TransportNone = "none"

// peerTransport picks the transport towards pr.
func peerTransport(cfg Config, u Underlay, pr Peer) string {
	if !pr.Underlay.IsValid() {
		return TransportNone
	}
	onLink := u.Prefix.IsValid() && u.Dev != "" && u.Prefix.Contains(pr.Underlay)
	switch {
	case cfg.wireguardMode():
		if pr.WGPublicKey == "" {
			return TransportNone
		}
		return TransportWireGuard
	case cfg.Transport == TransportDirect || (cfg.Transport == TransportAuto && onLink):
		if !onLink {
			return TransportNone
		}
		return TransportDirect
	default: // vxlan, or auto insecure off-link
		if !pr.Bridge.IsValid() {
			return TransportNone
		}
		return TransportVXLAN
	}
}
