package dns

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	miekg "github.com/miekg/dns"
	"github.com/weftmesh/weft/peer"
)

// Config configures a Server. Derive it from DefaultConfig.
type Config struct {
	Domain     string       // zone answered locally, fully qualified ("weft.local.")
	Listen     []string     // host:port addresses served over UDP and TCP; SetListen changes them
	Upstreams  []string     // forwarders, "host" or "host:port"; empty = the nameservers of ResolvConf
	ResolvConf string       // path of resolv.conf, re-read when it changes (used when Upstreams is empty)
	Range      netip.Prefix // pod address range: reverse lookups of unknown addresses in it are NXDOMAIN; zero = none
	Self       peer.ID      // this peer's ID: owner of the records added here
	Logger     *slog.Logger // nil = discard
	// TTL is the time to live of local answers, whole seconds (>= 1 s).
	TTL time.Duration
	// Timeout bounds forwarding one query, all upstreams together; each
	// upstream gets an equal share of what is left.
	Timeout time.Duration
	// TombstoneTTL is how long a removal is remembered (and gossiped) before
	// it is collected. It must exceed the time a partition may last.
	TombstoneTTL time.Duration
	// DeadPeerTTL is how long the records of a peer that is not alive stay
	// hidden before they are deleted; they come back if it rejoins.
	DeadPeerTTL time.Duration
	// UDPSockets is the number of UDP sockets per listen address, bound
	// with SO_REUSEPORT so the kernel spreads queries over them; 0 = one
	// per CPU (at least 2).
	UDPSockets int
}

// DefaultConfig returns the configuration of a peer's DNS server.
func DefaultConfig() Config {
	return Config{
		Domain:       "weft.local.",
		Listen:       nil,
		Upstreams:    nil,
		ResolvConf:   "/etc/resolv.conf",
		Range:        netip.Prefix{},
		Self:         0,
		Logger:       nil,
		TTL:          5 * time.Second,
		Timeout:      2 * time.Second,
		TombstoneTTL: 30 * time.Minute,
		DeadPeerTTL:  30 * time.Minute,
		UDPSockets:   0,
	}
}

var (
	// ErrBadConfig is wrapped by every Validate error.
	ErrBadConfig = errors.New("bad dns config")
	// ErrBadName means a name is not a valid host name (in the domain).
	ErrBadName = errors.New("bad dns name")
	// ErrBadAddr means an address is invalid.
	ErrBadAddr = errors.New("bad address")
	// ErrNotFound means no record of ours matched a removal.
	ErrNotFound = errors.New("no such record")
	// ErrBadMessage is wrapped by every error decoding a gossip message.
	ErrBadMessage = errors.New("bad dns gossip message")
	// ErrClosed is returned by SetListen after Run has returned.
	ErrClosed = errors.New("dns server closed")

	errForeignDelta = errors.New("delta carries records of another owner")
	errNoUpstream   = errors.New("no usable upstream")
	errBusy         = errors.New("too many queries being forwarded")
)

// Validate reports the first problem with the configuration.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("dns config: %s: %w", fmt.Sprintf(format, args...), ErrBadConfig)
	}
	d := strings.ToLower(c.Domain)
	if !strings.HasSuffix(d, ".") || d == "." {
		return bad("domain %q must be fully qualified (trailing dot) and not the root", c.Domain)
	}
	if _, ok := miekg.IsDomainName(d); !ok {
		return bad("domain %q is not a domain name", c.Domain)
	}
	for _, l := range c.Listen {
		if _, err := parseHostPort(l, 53); err != nil {
			return bad("listen %q: %v", l, err)
		}
	}
	for _, u := range c.Upstreams {
		if _, err := parseHostPort(u, 53); err != nil {
			return bad("upstream %q: %v", u, err)
		}
	}
	if len(c.Upstreams) == 0 && c.ResolvConf == "" {
		return bad("no upstreams and no resolv.conf")
	}
	if c.Range.IsValid() && c.Range != c.Range.Masked() {
		return bad("range %s is not masked", c.Range)
	}
	if c.Self == 0 {
		return bad("self peer ID is zero")
	}
	if c.TTL < time.Second || c.TTL > 24*time.Hour {
		return bad("ttl %s outside 1s..24h", c.TTL)
	}
	if c.Timeout <= 0 || c.TombstoneTTL <= 0 || c.DeadPeerTTL <= 0 {
		return bad("timeout, tombstone and dead peer TTLs must be positive")
	}
	if c.UDPSockets < 0 || c.UDPSockets > 64 {
		return bad("udp sockets %d outside 0..64", c.UDPSockets)
	}
	return nil
}

// parseHostPort parses "ip:port" or a bare "ip" (with defPort).
func parseHostPort(s string, defPort uint16) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("want ip or ip:port: %w", err)
	}
	if a.Zone() != "" {
		return netip.AddrPort{}, errors.New("zoned addresses are not supported")
	}
	return netip.AddrPortFrom(a.Unmap(), defPort), nil
}
