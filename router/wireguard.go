package router

// WireGuard transport.
//
// The device itself (kernel module, or the userspace wireguard-go datapath in
// its own long-lived process so that control-plane restarts never cut pod
// traffic) belongs to router/wg; this file is the seam the router consumes and
// the mapping from the desired state to WireGuard peers.
//
// AllowedIPs of a peer are exactly its IPAM ranges plus its bridge /32:
// WireGuard's cryptokey routing then accepts from a peer only packets sourced
// in the addresses it owns (a peer cannot spoof another's pods), and the
// kernel routes (range → dev weft-wg) select the peer by destination the same
// way the ring does. When a range moves (donation, reclaim) the AllowedIPs
// move with it in the same reconcile as the route.
//
// Configure is diff-based in router/wg: an unchanged peer keeps its session,
// so a resync or a relaunched control plane does not renegotiate handshakes.

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"time"
)

// WGDevice is a WireGuard device as the router drives it. Methods may be
// called from one goroutine at a time (the router serialises them).
type WGDevice interface {
	// Configure makes the device's private key, listen port and peers equal
	// to the args, changing only the difference (never drop a session of an
	// unchanged peer).
	Configure(privateKey string, listenPort int, peers []WGPeer) error
	// Stats returns per-peer counters by base64 public key.
	Stats() (map[string]WGPeerStats, error)
	// Name is the interface name.
	Name() string
	// Close releases handles only; the device stays.
	Close() error
	// Delete removes the device (and stops the userspace datapath).
	Delete() error
}

// WGPeer is one WireGuard peer.
type WGPeer struct {
	PublicKey  string // base64
	Endpoint   netip.AddrPort
	AllowedIPs []netip.Prefix
	Keepalive  time.Duration // persistent keepalive; 0 = off
}

// WGPeerStats are a WireGuard peer's counters.
type WGPeerStats struct {
	LastHandshake time.Time
	RxBytes       int64
	TxBytes       int64
	Endpoint      netip.AddrPort
}

// WGDeviceConfig is what a WGFactory needs to create or adopt a device.
type WGDeviceConfig struct {
	Name            string   // interface name
	MTU             int      // bytes
	DatapathCommand []string // argv of the userspace datapath process
	// ExternalDatapath: the userspace datapath is someone else's to start
	// (wg.Config.ExternalDatapath).
	ExternalDatapath bool
	Logger           *slog.Logger
}

// WGFactory creates the WireGuard device, or adopts the one already running
// (a relaunched control plane finds the datapath process it left behind).
type WGFactory func(ctx context.Context, cfg WGDeviceConfig) (WGDevice, error)

// PeerStats are the datapath counters of one peer (WireGuard; zero otherwise).
type PeerStats struct {
	LastHandshake time.Time
	RxBytes       int64
	TxBytes       int64
	Endpoint      string
}

// wgPeer returns the WireGuard peer for p.
func wgPeer(cfg Config, p Peer) WGPeer {
	port := p.WGPort
	if port == 0 {
		port = cfg.WGPort
	}
	allowed := slices.Clone(p.Ranges)
	allowed = append(allowed, p.Accept...) // underlay.go
	if p.Bridge.IsValid() {
		allowed = append(allowed, netip.PrefixFrom(p.Bridge, p.Bridge.BitLen()))
	}
	slices.SortFunc(allowed, comparePrefix)
	allowed = slices.Compact(allowed)
	return WGPeer{
		PublicKey:  p.WGPublicKey,
		Endpoint:   netip.AddrPortFrom(p.Underlay, port),
		AllowedIPs: allowed,
		Keepalive:  cfg.WGKeepalive,
	}
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// sameWGPeers reports whether two peer lists (sorted by key) are equal.
func sameWGPeers(a, b []WGPeer) bool {
	return slices.EqualFunc(a, b, func(x, y WGPeer) bool {
		return x.PublicKey == y.PublicKey && x.Endpoint == y.Endpoint &&
			x.Keepalive == y.Keepalive && slices.Equal(x.AllowedIPs, y.AllowedIPs)
	})
}
