package router

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// Kernel is the operation-level seam between the reconciler and the host.
// Reads (LinkGet, AddrList, RouteList, NeighList, FDBList, SysctlGet,
// NftGet, Underlay) never change anything; every other method changes exactly
// what its name says, idempotently. The reconciler calls a mutating method
// only after a read showed a difference, so a Kernel that records mutations
// (routertest.Kernel) yields a transcript in which a repeated Set adds no
// lines. Implementations must be safe for use by one goroutine at a time;
// the Router serialises its calls.
type Kernel interface {
	// LinkGet returns the device named name, or an error wrapping ErrNotFound.
	LinkGet(name string) (Link, error)
	// LinkEnsure creates l (Kind "bridge" or "vxlan") or, for an existing
	// device, brings MTU, MAC and up state to l; a device of another kind or
	// with other VXLAN parameters is deleted and recreated. Kind "" manages
	// MTU and up state of a device created elsewhere (WireGuard).
	LinkEnsure(l Link) error
	// LinkDelete removes the device; a missing device is not an error.
	LinkDelete(name string) error

	// AddrList returns the IPv4 addresses of device dev.
	AddrList(dev string) ([]netip.Prefix, error)
	// AddrEnsure adds a to dev with IFA_F_NOPREFIXROUTE (no connected route).
	AddrEnsure(dev string, a netip.Prefix) error
	// AddrDelete removes a from dev.
	AddrDelete(dev string, a netip.Prefix) error

	// RouteList returns weft's routes (protocol RouteProtocol, main table).
	RouteList() ([]Route, error)
	// RouteReplace installs r (marked with RouteProtocol), replacing any
	// route to the same destination.
	RouteReplace(r Route) error
	// RouteDelete removes r; a missing route is not an error.
	RouteDelete(r Route) error

	// NeighList returns the permanent IPv4 neighbours of dev.
	NeighList(dev string) ([]Neigh, error)
	// NeighSet installs a permanent neighbour entry.
	NeighSet(n Neigh) error
	// NeighDelete removes a neighbour entry.
	NeighDelete(n Neigh) error

	// FDBList returns the forwarding entries of dev that carry a remote
	// underlay destination (VXLAN).
	FDBList(dev string) ([]FDB, error)
	// FDBSet installs a permanent forwarding entry (MAC → remote VTEP).
	FDBSet(f FDB) error
	// FDBDelete removes a forwarding entry.
	FDBDelete(f FDB) error

	// SysctlGet reads a sysctl, key in slash form (net/ipv4/ip_forward).
	SysctlGet(key string) (string, error)
	// SysctlSet writes a sysctl.
	SysctlSet(key, value string) error

	// NftGet returns the range masqueraded by nft table "ip weft"; an
	// invalid prefix means the table is absent.
	NftGet() (netip.Prefix, error)
	// NftSet atomically (re)creates table "ip weft" masquerading traffic from
	// rng to destinations outside it.
	NftSet(rng netip.Prefix) error
	// NftDelete removes table "ip weft"; a missing table is not an error.
	NftDelete() error

	// Underlay describes the device that holds addr.
	Underlay(addr netip.Addr) (Underlay, error)
}

// RouteProtocol marks weft's routes (rtm_protocol), so the reconciler finds
// its own routes and deletes stale ones without touching anybody else's.
// 157 is unassigned in iproute2's rt_protos and rt_protos.d of common distros.
const RouteProtocol = 157

// Link is a network device as the datapath manages it.
type Link struct {
	Name         string
	Kind         string           // "bridge", "vxlan", "dummy" (a bridge where the kernel has no dummy driver), "macvlan" (mode bridge), "" (created elsewhere, e.g. WireGuard)
	Parent       string           // Kind "macvlan": the parent device
	MTU          int              // bytes
	Up           bool             // administratively up
	HardwareAddr net.HardwareAddr // wanted MAC; nil = the kernel's choice
	VXLAN        VXLAN            // Kind "vxlan" only
}

// VXLAN are a VXLAN device's parameters. Learning is always off.
type VXLAN struct {
	VNI   uint32
	Port  uint16     // UDP destination and listen port
	Local netip.Addr // source address of the encapsulated packets; invalid = by route
}

func (l Link) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s", l.Name)
	if l.Parent != "" {
		fmt.Fprintf(&b, " link %s", l.Parent)
	}
	if l.Kind != "" {
		fmt.Fprintf(&b, " type %s", l.Kind)
	}
	if l.Kind == "macvlan" {
		b.WriteString(" mode bridge")
	}
	if l.Kind == "vxlan" {
		fmt.Fprintf(&b, " id %d dstport %d", l.VXLAN.VNI, l.VXLAN.Port)
		if l.VXLAN.Local.IsValid() {
			fmt.Fprintf(&b, " local %v", l.VXLAN.Local)
		}
		b.WriteString(" nolearning")
	}
	if l.HardwareAddr != nil {
		fmt.Fprintf(&b, " address %v", l.HardwareAddr)
	}
	fmt.Fprintf(&b, " mtu %d", l.MTU)
	if l.Up {
		b.WriteString(" up")
	}
	return b.String()
}

// Route is one of weft's routes in the main table.
type Route struct {
	Dst         netip.Prefix
	Dev         string     // output device; empty for Unreachable
	Gw          netip.Addr // next hop; invalid = scope link
	Src         netip.Addr // preferred source (the bridge address)
	OnLink      bool       // next hop reachable on Dev without a covering route
	Unreachable bool       // type unreachable: answer ICMP instead of leaking
}

func (r Route) String() string {
	if r.Unreachable {
		return "unreachable " + r.Dst.String()
	}
	var b strings.Builder
	b.WriteString(r.Dst.String())
	if r.Gw.IsValid() {
		fmt.Fprintf(&b, " via %v", r.Gw)
	}
	fmt.Fprintf(&b, " dev %s", r.Dev)
	if r.OnLink {
		b.WriteString(" onlink")
	}
	if r.Src.IsValid() {
		fmt.Fprintf(&b, " src %v", r.Src)
	}
	return b.String()
}

// Neigh is a permanent neighbour entry.
type Neigh struct {
	Dev string
	IP  netip.Addr
	MAC net.HardwareAddr
}

func (n Neigh) String() string { return fmt.Sprintf("%v lladdr %v dev %s", n.IP, n.MAC, n.Dev) }

// FDB is a permanent bridge forwarding entry of a VXLAN device.
type FDB struct {
	Dev string
	MAC net.HardwareAddr
	Dst netip.Addr // remote VTEP (underlay address)
}

func (f FDB) String() string { return fmt.Sprintf("%v dst %v dev %s", f.MAC, f.Dst, f.Dev) }

// Underlay is the device carrying this host's underlay address.
type Underlay struct {
	Dev    string
	MTU    int          // bytes
	Prefix netip.Prefix // the address with its subnet's length: peers inside are on-link
}

// Sentinel errors.
var (
	ErrNotFound      = errors.New("not found")
	ErrInvalidConfig = errors.New("invalid router config")
	ErrNoWireGuard   = errors.New("no WireGuard device factory")
)
