package wg

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// Sentinel errors; callers compare with errors.Is.
var (
	ErrInvalidConfig    = errors.New("wg: invalid config")
	ErrForeignDevice    = errors.New("wg: UAPI socket answers but the interface is not in this network namespace")
	ErrDatapathExited   = errors.New("wg: datapath process exited during start")
	ErrStartTimeout     = errors.New("wg: device did not appear in time")
	ErrInvalidKey       = errors.New("wg: invalid key")
	ErrDuplicatePeer    = errors.New("wg: duplicate peer public key")
	ErrNotWireGuardLink = errors.New("wg: interface exists but is not a WireGuard device")
)

// Config describes the device Ensure creates or reuses.
type Config struct {
	// Name is the interface name (at most 15 bytes). It also names the UAPI
	// socket /var/run/wireguard/NAME.sock, which is shared by every network
	// namespace of the machine: two devices in two namespaces need two names.
	Name string
	// MTU is the interface MTU in bytes given to a newly created device
	// (the router core sets the final MTU through netlink).
	MTU int
	// DatapathCommand is the program and leading arguments that start the
	// userspace datapath process, e.g. {"/usr/local/bin/weft", "datapath"}.
	// Ensure always appends "--iface", Name, "--mtu", MTU (so a command that
	// already carries them still works: the last flag wins).
	// "/proc/self/exe" names the running binary.
	DatapathCommand []string
	// DatapathLog is the file (appended to) that receives the datapath
	// process's stdout and stderr; empty means /dev/null.
	DatapathLog string
	// ForceUserspace skips kernel WireGuard even when the module exists.
	ForceUserspace bool
	// ExternalDatapath says that someone else runs the userspace datapath
	// (`weft datapath --idle-with-kernel` in a container of its own, so
	// that replacing the control plane's container does not end it):
	// without kernel WireGuard, Ensure waits for it to answer on the UAPI
	// socket and never starts a process.
	ExternalDatapath bool
	// Logger receives our logs; nil discards them.
	Logger *slog.Logger
	// StartTimeout bounds how long Ensure waits for a started datapath
	// process to answer on its UAPI socket.
	StartTimeout time.Duration
}

// DefaultConfig returns the defaults of weft's mesh device.
func DefaultConfig() Config {
	return Config{
		Name:             "weft-wg",                              // interface and UAPI socket name
		MTU:              1420,                                   // bytes: 1500 underlay - 60 (IPv4 + UDP + WireGuard)
		DatapathCommand:  []string{"/proc/self/exe", "datapath"}, // argv prefix; --iface/--mtu appended
		DatapathLog:      "",                                     // path; "" = /dev/null
		ForceUserspace:   false,                                  // bool: use kernel WireGuard when present
		ExternalDatapath: false,                                  // bool: start the userspace process ourselves
		Logger:           nil,                                    // nil = discard
		StartTimeout:     10 * time.Second,                       // duration: datapath start deadline
	}
}

// Validate reports whether c can be used by Ensure.
func (c Config) Validate() error {
	if err := validateLink(c.Name, c.MTU); err != nil {
		return err
	}
	switch {
	case c.StartTimeout <= 0:
		return fmt.Errorf("%w: StartTimeout %v must be positive", ErrInvalidConfig, c.StartTimeout)
	case len(c.DatapathCommand) == 0:
		return fmt.Errorf("%w: DatapathCommand is empty", ErrInvalidConfig)
	}
	return nil
}

// validateLink checks an interface name (it also names files) and an MTU.
func validateLink(name string, mtu int) error {
	if name == "" || len(name) > 15 {
		return fmt.Errorf("%w: interface name %q must have 1-15 bytes", ErrInvalidConfig, name)
	}
	for _, r := range name {
		if r == '/' || r == ' ' || r == 0 || r == ':' {
			return fmt.Errorf("%w: interface name %q contains %q", ErrInvalidConfig, name, r)
		}
	}
	if mtu < 576 || mtu > 65535 {
		return fmt.Errorf("%w: MTU %d out of [576, 65535]", ErrInvalidConfig, mtu)
	}
	return nil
}

// Peer is the desired configuration of one WireGuard peer.
type Peer struct {
	PublicKey  string         // base64 public key
	Endpoint   netip.AddrPort // invalid = no endpoint (wait for the peer to reach us)
	AllowedIPs []netip.Prefix // the peer's ranges and its bridge /32
	Keepalive  time.Duration  // persistent keepalive; 0 = off
}

// PeerStats is what the device reports about one peer.
type PeerStats struct {
	LastHandshake time.Time      // zero = never
	RxBytes       int64          // bytes received from the peer
	TxBytes       int64          // bytes sent to the peer
	Endpoint      netip.AddrPort // current (possibly roamed) endpoint
}

// DatapathBinary is the file name of the lean datapath binary
// (cmd/weft-datapath), looked for next to the weft binary.
const DatapathBinary = "weft-datapath"

// DatapathCommand returns the argv prefix that starts the userspace
// datapath for the weft binary exe: DatapathBinary when an executable file
// of that name lies in exe's directory (it links only the datapath, so
// its start and its memory cost less), else exe's own `datapath` command.
func DatapathCommand(exe string) []string {
	lean := filepath.Join(filepath.Dir(exe), DatapathBinary)
	if st, err := os.Stat(lean); err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0 {
		return []string{lean}
	}
	return []string{exe, "datapath"}
}
