package ipam

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/weftmesh/weft/peer"
)

// InitMode says how this peer takes part in the ring's first division.
type InitMode int

// The bootstrap modes (flag --ipalloc-init).
const (
	// InitConsensus: single-decree Paxos among the launch peers; quorum is
	// Quorum/2+1 of Config.Quorum peers.
	InitConsensus InitMode = iota
	// InitSeed: the peers named in Config.Seeds divide the ring at once,
	// deterministically; every other peer waits for that ring.
	InitSeed
	// InitObserver: never takes part; waits for an existing ring.
	InitObserver
)

// Init is a parsed --ipalloc-init value.
type Init struct {
	Mode   InitMode
	Quorum int      // InitConsensus: number of launch peers N (>= 1)
	Seeds  []string // InitSeed: peer names, at least one
}

// String renders the flag form: consensus=N, seed=a,b or observer.
func (in Init) String() string {
	switch in.Mode {
	case InitSeed:
		return "seed=" + strings.Join(in.Seeds, ",")
	case InitObserver:
		return "observer"
	default:
		return "consensus=" + strconv.Itoa(in.Quorum)
	}
}

// ParseInit parses consensus=N, seed=NAME,... or observer.
func ParseInit(s string) (Init, error) {
	switch {
	case s == "observer":
		return Init{Mode: InitObserver}, nil
	case strings.HasPrefix(s, "consensus="):
		n, err := strconv.Atoi(strings.TrimPrefix(s, "consensus="))
		if err != nil || n < 1 || n > 1000 {
			return Init{}, fmt.Errorf("parse ipalloc-init %q: %w", s, ErrBadInit)
		}
		return Init{Mode: InitConsensus, Quorum: n}, nil
	case strings.HasPrefix(s, "seed="):
		var seeds []string
		for _, n := range strings.Split(strings.TrimPrefix(s, "seed="), ",") {
			if n = strings.TrimSpace(n); n != "" {
				seeds = append(seeds, n)
			}
		}
		if len(seeds) == 0 {
			return Init{}, fmt.Errorf("parse ipalloc-init %q: %w", s, ErrBadInit)
		}
		return Init{Mode: InitSeed, Seeds: seeds}, nil
	}
	return Init{}, fmt.Errorf("parse ipalloc-init %q: %w", s, ErrBadInit)
}

// Config configures an Allocator.
type Config struct {
	Range  netip.Prefix // the pod address range, IPv4, /8 to /30
	Init   Init         // how the first division happens
	DBPath string       // bbolt file holding the ring and the allocations
	Self   peer.ID      // this peer's ID (non-zero)
	Name   string       // this peer's name, to find itself in a seed list (optional: SetPeers also tells)
	Logger *slog.Logger // nil = discard
	// Pool names this ring in logs ("" = the pod range): a peer may run a
	// second ring, e.g. "underlay" for macvlan pods.
	Pool string

	BootstrapInterval   time.Duration // pause between Paxos bootstrap rounds (jittered)
	RequestTimeout      time.Duration // wait for a Paxos quorum, a donation or a handoff ack
	RebroadcastInterval time.Duration // re-broadcast of this peer's own tokens (0 = never)
	NoSync              bool          // skip fsync in bbolt (tests only: loses durability)
	// BootstrapGate, when set, must return true before this peer proposes
	// or seeds a first division; until then it only asks peers for an
	// existing ring. The daemon closes the gate until every known peer has
	// joined the targets it was launched with, so that an island of peers
	// that has not yet met the rest of the mesh never divides a ring of its
	// own. nil = always open. Called from the bootstrap goroutine.
	BootstrapGate func() bool
	// Reachable, when set, reports whether the mesh can reach a peer now:
	// the membership's own view, ahead of the last SetPeers (the daemon
	// hands peers new to the mesh over in its next sync pass, seconds
	// later under a mass join's load). A donation request from a peer
	// SetPeers has not brought yet is answered as soon as Reachable says
	// so, instead of waiting for that pass. nil = only SetPeers counts.
	// Called with the allocator's lock held: it must not call into the
	// allocator.
	Reachable func(peer.ID) bool
}

// DefaultConfig returns the defaults of weft launch.
func DefaultConfig() Config {
	return Config{
		Range:               netip.MustParsePrefix("10.32.0.0/12"),
		Init:                Init{Mode: InitConsensus, Quorum: 1},
		DBPath:              "/var/lib/weft/ipam.db",
		Self:                0,  // must be set by the caller
		Name:                "", // set by the caller for seed=...
		Logger:              nil,
		BootstrapInterval:   time.Second,
		RequestTimeout:      2 * time.Second,
		RebroadcastInterval: 30 * time.Second,
		NoSync:              false,
		Pool:                "",
	}
}

// Validate reports the first bad field.
func (c Config) Validate() error {
	switch {
	case !c.Range.IsValid() || !c.Range.Addr().Is4():
		return fmt.Errorf("ipam config: range %s: %w", c.Range, ErrBadRange)
	case c.Range.Bits() < 8 || c.Range.Bits() > 30:
		return fmt.Errorf("ipam config: range %s must be /8 to /30: %w", c.Range, ErrBadRange)
	case c.Range.Masked() != c.Range:
		return fmt.Errorf("ipam config: range %s has host bits set: %w", c.Range, ErrBadRange)
	case c.Self == 0:
		return fmt.Errorf("ipam config: self ID is zero: %w", ErrBadConfig)
	case c.DBPath == "":
		return fmt.Errorf("ipam config: empty DBPath: %w", ErrBadConfig)
	case c.Init.Mode < InitConsensus || c.Init.Mode > InitObserver:
		return fmt.Errorf("ipam config: init mode %d: %w", c.Init.Mode, ErrBadInit)
	case c.Init.Mode == InitConsensus && c.Init.Quorum < 1:
		return fmt.Errorf("ipam config: consensus=%d: %w", c.Init.Quorum, ErrBadInit)
	case c.Init.Mode == InitSeed && len(c.Init.Seeds) == 0:
		return fmt.Errorf("ipam config: empty seed list: %w", ErrBadInit)
	case c.BootstrapInterval <= 0 || c.RequestTimeout <= 0 || c.RebroadcastInterval < 0:
		return fmt.Errorf("ipam config: timers must be positive: %w", ErrBadConfig)
	}
	return nil
}

// Errors callers can test with errors.Is.
var (
	ErrBadConfig        = errors.New("bad ipam config")
	ErrBadRange         = errors.New("bad address range")
	ErrBadInit          = errors.New("ipalloc-init must be consensus=N, seed=NAME,... or observer")
	ErrNoSpace          = errors.New("no free address anywhere in the range")
	ErrClosed           = errors.New("allocator closed")
	ErrLeaving          = errors.New("allocator handed its space off")
	ErrPeerAlive        = errors.New("peer is alive; refusing to reclaim its space")
	ErrNothingToReclaim = errors.New("peer owns no space")
	ErrReclaimedByOther = errors.New("another peer won the reclaim")
	ErrNoQuorum         = errors.New("too few peers reachable to decide safely")
	ErrNotReady         = errors.New("ring not ready: awaiting consensus")
	ErrNoPeer           = errors.New("no live peer accepted the handoff")
	ErrBadMessage       = errors.New("malformed ipam message")
	ErrDifferentRing    = errors.New("message belongs to a different ring")
	ErrClaimOnAllocated = errors.New("message claims a range with our allocations")
	ErrForgedOwnToken   = errors.New("message carries our own token at a version we never wrote")
	ErrSelf             = errors.New("cannot reclaim self")
	ErrEmptyID          = errors.New("allocation ID is empty")
	ErrUnknownID        = errors.New("no allocation with that ID")
	ErrIDTaken          = errors.New("allocation ID already in use")

	// Internal outcomes of a Paxos round; callers retry on them.
	errPreempted = errors.New("paxos: preempted by a higher ballot")
	errMismatch  = errors.New("paxos: acceptors see the dead peer's tokens differently")
	errHasRing   = errors.New("paxos: a ring exists already")
	errNoQuorum  = errors.New("paxos: no quorum before the timeout")
)
