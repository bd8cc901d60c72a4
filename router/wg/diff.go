package wg

// Configure never replaces the whole device configuration. Replacing would
// be simpler, but wireguard-go and the kernel both drop a peer's sessions
// when the peer is removed and re-added, and rebinding the listen port
// interrupts every peer for a moment. A relaunched control plane configures
// the still-running device again with the same keys and peers, and that must
// be a no-op for pod traffic. So the desired state is diffed against what
// wgctrl reports: the private key and port are written only when they
// differ, unchanged peers are not mentioned at all, changed peers are updated
// in place (ReplaceAllowedIPs only when the set differs), and peers that are
// no longer wanted are removed one by one.

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// desired is a parsed Configure call.
type desired struct {
	privateKey wgtypes.Key
	listenPort int
	peers      map[wgtypes.Key]Peer
}

// parseDesired validates the arguments of Configure.
func parseDesired(privateKey string, listenPort int, peers []Peer) (desired, error) {
	d := desired{listenPort: listenPort, peers: make(map[wgtypes.Key]Peer, len(peers))}
	k, err := wgtypes.ParseKey(privateKey)
	if err != nil {
		return d, fmt.Errorf("%w: private key: %w", ErrInvalidKey, err)
	}
	d.privateKey = k
	if listenPort < 0 || listenPort > 65535 {
		return d, fmt.Errorf("%w: listen port %d", ErrInvalidConfig, listenPort)
	}
	for _, p := range peers {
		pk, err := wgtypes.ParseKey(p.PublicKey)
		if err != nil {
			return d, fmt.Errorf("%w: peer public key %q: %w", ErrInvalidKey, p.PublicKey, err)
		}
		if _, dup := d.peers[pk]; dup {
			return d, fmt.Errorf("%w: %s", ErrDuplicatePeer, p.PublicKey)
		}
		if p.Keepalive < 0 || p.Keepalive > 65535*time.Second {
			return d, fmt.Errorf("%w: peer %s keepalive %v", ErrInvalidConfig, p.PublicKey, p.Keepalive)
		}
		for _, a := range p.AllowedIPs {
			if !a.IsValid() {
				return d, fmt.Errorf("%w: peer %s has an invalid allowed IP", ErrInvalidConfig, p.PublicKey)
			}
		}
		d.peers[pk] = p
	}
	return d, nil
}

// diff returns the wgtypes.Config that turns cur into want, and whether it
// changes anything at all.
func diff(cur *wgtypes.Device, want desired) (wgtypes.Config, bool) {
	var cfg wgtypes.Config
	if cur.PrivateKey != want.privateKey {
		k := want.privateKey
		cfg.PrivateKey = &k
	}
	if cur.ListenPort != want.listenPort && want.listenPort != 0 {
		port := want.listenPort
		cfg.ListenPort = &port
	}
	have := make(map[wgtypes.Key]wgtypes.Peer, len(cur.Peers))
	for _, p := range cur.Peers {
		have[p.PublicKey] = p
		if _, ok := want.peers[p.PublicKey]; !ok {
			cfg.Peers = append(cfg.Peers, wgtypes.PeerConfig{PublicKey: p.PublicKey, Remove: true})
		}
	}
	for k, p := range want.peers {
		pc, changed := peerDiff(k, have[k], p)
		if _, exists := have[k]; !exists || changed {
			cfg.Peers = append(cfg.Peers, pc)
		}
	}
	// Deterministic order: removals first, then by key.
	slices.SortFunc(cfg.Peers, peerConfigOrder)
	return cfg, cfg.PrivateKey != nil || cfg.ListenPort != nil || len(cfg.Peers) > 0
}

// peerConfigOrder orders removals first, then by public key.
func peerConfigOrder(a, b wgtypes.PeerConfig) int {
	if a.Remove != b.Remove {
		if a.Remove {
			return -1
		}
		return 1
	}
	return slices.Compare(a.PublicKey[:], b.PublicKey[:])
}

// peerDiff returns the update of one peer from cur (zero if absent) to
// want; changed is false when nothing differs.
func peerDiff(k wgtypes.Key, cur wgtypes.Peer, want Peer) (wgtypes.PeerConfig, bool) {
	pc := wgtypes.PeerConfig{PublicKey: k}
	changed := false
	if want.Endpoint.IsValid() && fromUDPAddr(cur.Endpoint) != want.Endpoint {
		pc.Endpoint = net.UDPAddrFromAddrPort(want.Endpoint)
		changed = true
	}
	if cur.PersistentKeepaliveInterval != want.Keepalive {
		ka := want.Keepalive
		pc.PersistentKeepaliveInterval = &ka
		changed = true
	}
	wantIPs := canonPrefixes(want.AllowedIPs)
	if !slices.Equal(canonPrefixes(fromIPNets(cur.AllowedIPs)), wantIPs) {
		pc.ReplaceAllowedIPs = true
		pc.AllowedIPs = toIPNets(wantIPs)
		changed = true
	}
	return pc, changed
}

// canonPrefixes returns the masked, sorted, deduplicated prefixes.
func canonPrefixes(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		out = append(out, netip.PrefixFrom(p.Addr().Unmap(), p.Bits()).Masked())
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return slices.Compact(out)
}

// The helpers below are the only conversions between net/netip and the net
// types of wgctrl.

func fromUDPAddr(a *net.UDPAddr) netip.AddrPort {
	if a == nil {
		return netip.AddrPort{}
	}
	ap := a.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func fromIPNets(ns []net.IPNet) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ns))
	for _, n := range ns {
		a, ok := netip.AddrFromSlice(n.IP)
		if !ok {
			continue
		}
		bits, _ := n.Mask.Size()
		out = append(out, netip.PrefixFrom(a.Unmap(), bits))
	}
	return out
}

func toIPNets(ps []netip.Prefix) []net.IPNet {
	out := make([]net.IPNet, 0, len(ps))
	for _, p := range ps {
		out = append(out, net.IPNet{
			IP:   net.IP(p.Addr().AsSlice()),
			Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
		})
	}
	return out
}
