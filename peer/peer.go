// Package peer holds the small value types that every weft subsystem shares:
// a peer's identity, its metadata and its liveness. It imports only the
// standard library so that gossip, ipam, dns, router and cni can all use it
// without depending on each other.
//
//	id, _ := peer.ParseID("8f3a9c2e11d0b7a4")
//	info := peer.Info{Name: "h1", ID: id, Addr: netip.MustParseAddr("192.168.1.10")}
//	if info.State == peer.Alive { ... }
package peer

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"
)

// ID is a peer's random 64-bit identity, created on its first start and kept
// across restarts. In JSON and on the CLI it is 16 lowercase hex digits,
// because 64-bit numbers lose precision in JSON tools.
type ID uint64

// String returns the ID as 16 lowercase hex digits.
func (id ID) String() string { return fmt.Sprintf("%016x", uint64(id)) }

// MarshalText implements encoding.TextMarshaler.
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (id *ID) UnmarshalText(b []byte) error {
	v, err := ParseID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// ErrBadID is returned by ParseID for anything but 1–16 hex digits.
var ErrBadID = errors.New("peer ID must be 1-16 hex digits")

// ParseID parses the hex form produced by ID.String.
func ParseID(s string) (ID, error) {
	if len(s) == 0 || len(s) > 16 {
		return 0, fmt.Errorf("parse peer ID %q: %w", s, ErrBadID)
	}
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("parse peer ID %q: %w", s, ErrBadID)
	}
	return ID(v), nil
}

// State is a peer's liveness as seen by this peer's failure detector.
type State string

// The peer states. Dead peers stay listed until reclaimed or forgotten.
// Stopped is a peer whose control plane said it was stopping (SIGTERM): it
// still owns its address space and its datapath still forwards. Left is a
// peer that left the mesh for good (`weft reset`) after handing its space
// over.
const (
	Alive   State = "alive"
	Dead    State = "dead"
	Stopped State = "stopped"
	Left    State = "left"
)

// There is no "suspect" state: memberlist suspects a peer internally for a
// few seconds before it declares it dead, but it publishes no per-node
// suspicion, so weft reports the peer alive until memberlist says dead.

// Up reports whether the failure detector thinks the peer runs.
func (s State) Up() bool { return s == Alive }

// Info is everything this peer knows about another peer (or itself).
type Info struct {
	Name  string     // unique in the mesh; defaults to the host name
	ID    ID         // random, persistent identity
	Addr  netip.Addr // underlay address gossip reached it on
	State State      // liveness from the failure detector
	// LastSeen is when the failure detector last heard from the peer
	// (for this peer itself: now).
	LastSeen time.Time
	RTT      time.Duration // last gossip probe round trip; 0 if unknown
	Meta     Meta          // what the peer published about itself
}

// Meta is what a peer publishes about itself through gossip (memberlist node
// metadata). It is small and bounded: the encoded form must fit in 512 bytes.
type Meta struct {
	Version   string     // weft version of the peer
	WGKey     string     // WireGuard public key, base64; empty when insecure
	WGPort    uint16     // WireGuard UDP port
	Bridge    netip.Addr // the peer's bridge address on the pod network, once it has one
	Transport string     // transport the peer runs: wireguard, vxlan or direct
	Insecure  bool       // the peer runs without a cluster secret
	// Joined is true once the peer has reached one of the peers it was
	// launched with (always true for a peer launched with none): until
	// every known peer has, nobody divides a new address ring.
	Joined bool
	// Underlay is the peer's underlay pool (--underlay-range); invalid =
	// none. Peers with the same pool form its ring.
	Underlay netip.Prefix
	// Unreachable are the peers this peer cannot reach directly on the
	// datapath (measured, with hysteresis): the others relay for it. Sorted,
	// at most a few dozen (the wire form is bounded).
	Unreachable []ID
	// UnreachableAt is when Unreachable takes effect, on the publisher's
	// clock (millisecond precision on the wire): every peer switches its
	// routes to the new set at the same moment (zero: at once).
	UnreachableAt time.Time
}
