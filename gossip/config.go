package gossip

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/weftmesh/weft/peer"
)

// DefaultPort is the TCP+UDP port gossip listens on.
const DefaultPort = 6783

// Config configures a Mesh. Derive it from DefaultConfig.
type Config struct {
	Name           string        // this peer's name, unique in the mesh
	ID             peer.ID       // this peer's persistent random ID
	BindAddr       string        // address to listen on ("0.0.0.0" = all)
	BindPort       int           // TCP+UDP port; 0 picks one (tests)
	AdvertiseAddr  string        // address other peers reach us on; "" = detect
	AdvertisePort  int           // 0 = BindPort
	Secret         []byte        // cluster secret; nil = insecure (no gossip encryption)
	Meta           peer.Meta     // initial metadata; change with SetMeta
	Logger         *slog.Logger  // nil = discard
	ReconnectEvery time.Duration // how often unreachable targets are retried
	// PushPullInterval is memberlist's full-state anti-entropy period (it
	// stretches it as the mesh grows). 0 = memberlist's LAN default (30 s).
	PushPullInterval time.Duration
	// DigestInterval is how often this peer sends its anti-entropy digest
	// to one random peer (antientropy.go); fixed, whatever the mesh's
	// size. 0 = no digests: channel state rides on memberlist's push-pull.
	DigestInterval time.Duration
	// Memberlist, when non-nil, is called on the memberlist configuration
	// after weft has filled it in: tests shrink timers and swap the
	// transport (MockNetwork) here.
	Memberlist func(*memberlist.Config)
	// InboxSize bounds each channel's queue of received messages; when full,
	// further messages are dropped (and counted): gossip repairs the loss.
	InboxSize int
}

// DefaultConfig returns a complete configuration for a LAN mesh.
func DefaultConfig() Config {
	return Config{
		Name:           "",
		BindAddr:       "0.0.0.0",
		BindPort:       DefaultPort,
		ReconnectEvery: 5 * time.Second,
		// memberlist's periodic push-pull moves both full views (O(N)
		// bytes) and it stretches the period only by log N, so its cost
		// per peer grows almost linearly with N. The digests repair both
		// channel state and membership (membership.go) when they differ,
		// so push-pull is only a slow safety net here: every 5 min at
		// 32 peers, 30 min at 1,000.
		PushPullInterval: 5 * time.Minute,
		// One digest a second to one random peer: a few hundred bytes each
		// way, flat in N; a missed delta is repaired within seconds.
		DigestInterval: time.Second,
		InboxSize:      4096,
	}
}

var (
	// ErrNoPeerJoined means no target answered a join.
	ErrNoPeerJoined = errors.New("no peer could be joined")
	// ErrRefused means a target refused this peer at the handshake: the
	// cluster secrets differ, or one side runs without one.
	ErrRefused = errors.New("refused at the handshake")
	// ErrUnknownPeer is returned by SendTo for a peer not alive in the table.
	ErrUnknownPeer = errors.New("unknown or unreachable peer")
	// ErrTooLarge is returned for a message over MaxMessage bytes.
	ErrTooLarge = errors.New("message too large")
)

// Validate reports the first problem with the configuration.
func (c Config) Validate() error {
	if c.Name == "" {
		return errors.New("gossip config: empty peer name")
	}
	if len(c.Name) > 128 {
		return fmt.Errorf("gossip config: peer name %q longer than 128 bytes", c.Name)
	}
	if c.BindPort < 0 || c.BindPort > 65535 {
		return fmt.Errorf("gossip config: bind port %d out of range", c.BindPort)
	}
	if c.AdvertiseAddr != "" {
		if _, err := netip.ParseAddr(c.AdvertiseAddr); err != nil {
			return fmt.Errorf("gossip config: advertise address: %w", err)
		}
	}
	if c.Secret != nil && len(c.Secret) < 16 {
		return errors.New("gossip config: cluster secret shorter than 16 bytes")
	}
	if c.ReconnectEvery <= 0 || c.InboxSize <= 0 || c.PushPullInterval < 0 || c.DigestInterval < 0 {
		return errors.New("gossip config: timers and inbox size must be positive")
	}
	return nil
}
