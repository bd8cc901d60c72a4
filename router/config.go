package router

import (
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/weftmesh/weft/peer"
	"github.com/weftmesh/weft/router/wg"
)

// Transports, the values of Config.Transport.
const (
	TransportWireGuard = "wireguard"
	TransportVXLAN     = "vxlan"
	TransportDirect    = "direct"
	TransportAuto      = "auto"
)

// Config is the full desired state of the datapath. Set(cfg) twice with the
// same value changes nothing in the kernel.
type Config struct {
	ID         peer.ID        // this peer's ID; derives our VXLAN VTEP MAC
	Bridge     string         // bridge device for local pods
	BridgeAddr netip.Prefix   // bridge address with the range's prefix length (10.32.0.1/12); invalid = not yet allocated: no address, no routes
	Range      netip.Prefix   // the whole pod range (10.32.0.0/12)
	Local      []netip.Prefix // ranges this peer owns (from IPAM)
	Transport  string         // "wireguard", "vxlan", "direct" or "auto"
	Underlay   netip.Addr     // this host's underlay address (gossip advertise address)
	MTU        int            // pod MTU in bytes; 0 = underlay device MTU minus encapsulation
	WGIface    string         // WireGuard device name
	WGPort     uint16         // WireGuard UDP listen port
	// WGPrivateKey is this peer's WireGuard private key, base64.
	WGPrivateKey string
	WGKeepalive  time.Duration // persistent keepalive towards each peer; 0 = off
	VXIface      string        // VXLAN device name
	VXPort       uint16        // VXLAN UDP port
	VNI          uint32        // VXLAN network identifier
	Insecure     bool          // no cluster secret: auto picks direct/vxlan instead of wireguard
	Masquerade   bool          // masquerade pod egress leaving the range (nft table "weft")
	// LocalAddr, when valid, is an IPv4 address this host holds for its own
	// services on the device LocalIface (a dummy; a bridge without ports
	// where the kernel has no dummy driver): the node-local DNS address,
	// the same on every node, as NodeLocal DNSCache does. A /32 adds no
	// route. Invalid = no such device (one left over is removed).
	LocalAddr  netip.Addr
	LocalIface string
	Peers      []Peer // every other live peer
	// Macvlan is the host side of underlay (macvlan) pods (underlay.go).
	Macvlan Macvlan
	// Unreachable are the peers this peer measured it cannot reach
	// directly on the datapath (paths.go routes around them).
	Unreachable []peer.ID
}

// Peer is another live peer as the datapath needs it.
type Peer struct {
	ID          peer.ID
	Name        string
	Underlay    netip.Addr     // underlay address (VXLAN remote, direct next hop, WireGuard endpoint)
	WGPublicKey string         // base64; empty when the peer runs without WireGuard
	WGPort      uint16         // WireGuard UDP port; 0 = Config.WGPort
	Bridge      netip.Addr     // the peer's bridge address; invalid = not yet allocated
	Ranges      []netip.Prefix // ranges the peer owns
	// Accept are underlay (macvlan) pool ranges the peer owns: packets from
	// them are accepted from the peer over WireGuard (its macvlan pods reach
	// our overlay pods through it), but never routed to it: those pods are
	// on the LAN (underlay.go).
	Accept []netip.Prefix
	// Unreachable are the peers that this peer reports it cannot reach
	// directly (its published adjacency; paths.go).
	Unreachable []peer.ID
}

// DefaultConfig returns the defaults of docs/design.md.
func DefaultConfig() Config {
	return Config{
		ID:           0,
		Bridge:       "weft",
		BridgeAddr:   netip.Prefix{},
		Range:        netip.Prefix{}, // the pod range: the caller's (ipam owns its default)
		Local:        nil,
		Transport:    TransportAuto,
		Underlay:     netip.Addr{},
		MTU:          0,
		WGIface:      wg.DefaultConfig().Name,
		WGPort:       51820,
		WGPrivateKey: "",
		WGKeepalive:  25 * time.Second,
		VXIface:      "weft-vx",
		VXPort:       4789,
		VNI:          1,
		Insecure:     false,
		Masquerade:   true,
		LocalAddr:    netip.Addr{},
		LocalIface:   "weft-dns",
		Peers:        nil,
		Macvlan:      Macvlan{Iface: DefaultMacvlanIface},
		Unreachable:  nil,
	}
}

// Validate reports the first problem with c.
func (c Config) Validate() error {
	switch {
	case c.Bridge == "" || len(c.Bridge) > 15:
		return fmt.Errorf("%w: bridge name %q", ErrInvalidConfig, c.Bridge)
	case c.WGIface == "" || len(c.WGIface) > 15:
		return fmt.Errorf("%w: WireGuard interface name %q", ErrInvalidConfig, c.WGIface)
	case c.VXIface == "" || len(c.VXIface) > 15:
		return fmt.Errorf("%w: VXLAN interface name %q", ErrInvalidConfig, c.VXIface)
	case !c.Range.IsValid() || !c.Range.Addr().Is4():
		return fmt.Errorf("%w: range %v (IPv4 prefix required)", ErrInvalidConfig, c.Range)
	case c.BridgeAddr.IsValid() && (c.BridgeAddr.Bits() != c.Range.Bits() || !c.Range.Contains(c.BridgeAddr.Addr())):
		return fmt.Errorf("%w: bridge address %v not in range %v with its prefix length", ErrInvalidConfig, c.BridgeAddr, c.Range)
	case c.MTU != 0 && (c.MTU < 576 || c.MTU > 65535):
		return fmt.Errorf("%w: MTU %d", ErrInvalidConfig, c.MTU)
	case c.VNI == 0 || c.VNI >= 1<<24:
		return fmt.Errorf("%w: VNI %d", ErrInvalidConfig, c.VNI)
	case c.LocalIface == "" || len(c.LocalIface) > 15:
		return fmt.Errorf("%w: local address interface name %q", ErrInvalidConfig, c.LocalIface)
	case c.LocalAddr.IsValid() && (!c.LocalAddr.Is4() || c.Range.Contains(c.LocalAddr)):
		return fmt.Errorf("%w: local address %v (IPv4 outside the range %v required)", ErrInvalidConfig, c.LocalAddr, c.Range)
	case c.VXPort == 0 || c.WGPort == 0:
		return fmt.Errorf("%w: zero UDP port", ErrInvalidConfig)
	}
	if err := c.Macvlan.validate(); err != nil {
		return err
	}
	switch c.Transport {
	case TransportWireGuard, TransportVXLAN, TransportDirect, TransportAuto:
	default:
		return fmt.Errorf("%w: transport %q", ErrInvalidConfig, c.Transport)
	}
	if c.uses(TransportWireGuard) && c.WGPrivateKey == "" {
		return fmt.Errorf("%w: WireGuard transport without a private key", ErrInvalidConfig)
	}
	for _, p := range c.Local {
		if !c.Range.Contains(p.Addr()) || p.Bits() < c.Range.Bits() {
			return fmt.Errorf("%w: local range %v outside %v", ErrInvalidConfig, p, c.Range)
		}
	}
	return nil
}

// wireguardMode reports whether c resolves to the WireGuard transport.
func (c Config) wireguardMode() bool {
	return c.Transport == TransportWireGuard || (c.Transport == TransportAuto && !c.Insecure)
}

// uses reports whether transport t may be used for some peer under c.
func (c Config) uses(t string) bool {
	switch t {
	case TransportWireGuard:
		return c.wireguardMode()
	case TransportVXLAN:
		return c.Transport == TransportVXLAN || (c.Transport == TransportAuto && c.Insecure)
	case TransportDirect:
		return c.Transport == TransportDirect || (c.Transport == TransportAuto && c.Insecure)
	}
	return false
}

// Options are the Router's dependencies.
type Options struct {
	// Kernel is the seam to the kernel; nil = netlink in the caller's
	// network namespace (NewNetlinkKernel).
	Kernel Kernel
	// WireGuard creates or adopts the WireGuard device; nil = router/wg
	// (kernel module, else the userspace datapath process).
	WireGuard WGFactory
	// DatapathCommand is the argv that starts the userspace WireGuard
	// process; passed through to the WGFactory.
	DatapathCommand []string
	// ExternalDatapath: never start the userspace datapath, wait for the
	// one that someone else runs (Kubernetes: its own container).
	ExternalDatapath bool
	Logger           *slog.Logger  // nil = discard
	ResyncInterval   time.Duration // period of the drift-repairing resync; 0 = 10 s
	Debounce         time.Duration // delay that coalesces bursts of Set; 0 = 200 ms
}
