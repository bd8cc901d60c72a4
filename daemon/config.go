// Package daemon is weft's composition root: the only package that knows
// every subsystem. It loads the peer's identity and secret, builds gossip,
// ipam, dns, the router and the API server, feeds each the state it needs
// from the others (membership → ipam/dns, ring + peers → router, bridge
// address → gossip metadata and DNS listeners) and implements the API's
// Backend on top of them. In Kubernetes mode (kube.go) it also follows
// the cluster's Nodes through kube/: gossip targets, the Node's network
// condition, and the reclaim of a deleted Node's peer.
//
//	cfg := daemon.DefaultConfig()
//	cfg.DataDir, cfg.Peers = "/var/lib/weft", []string{"192.168.1.10"}
//	d, err := daemon.New(cfg)
//	err = d.Run(ctx) // until ctx is done; then leaves the mesh gracefully
package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/weftmesh/weft/api/client"
	"github.com/weftmesh/weft/gossip"
	"github.com/weftmesh/weft/internal/version"
	"github.com/weftmesh/weft/ipam"
	"github.com/weftmesh/weft/kube"
	"github.com/weftmesh/weft/policy/nft"
	"github.com/weftmesh/weft/router"
	"github.com/weftmesh/weft/router/wg"
)

// Version is weft's version (internal/version, set at build time).
var Version = version.Version

// Config is everything `weft launch` takes.
type Config struct {
	Name         string        // peer name; "" = stored name, else hostname
	DataDir      string        // identity, secret, targets, ipam.db
	Socket       string        // unix control socket (full API); "" only with NoAPI
	HTTPAddr     string        // read-only TCP API + status page; "" = off
	Listen       string        // gossip bind host:port
	Advertise    string        // gossip address peers reach us on; "" = detect
	Password     string        // cluster secret; "" = stored or new (first peer)
	Insecure     bool          // no secret: no gossip encryption, plain datapath
	Transport    string        // auto, wireguard, vxlan, direct
	IPAllocRange netip.Prefix  // pod address range
	IPAllocInit  string        // "" = consensus=1+len(Peers) (Kubernetes: number of Nodes); consensus=N, seed=A,B, observer
	DNSDomain    string        // e.g. weft.local.
	DNSListen    []string      // extra DNS listen addresses (host:port) besides bridge:53
	DNSUpstream  []string      // forwarders; empty = /etc/resolv.conf
	NoDNS        bool          // no DNS server at all
	DNSTTL       time.Duration // TTL of local answers
	// DNSTombstoneTTL is how long a removed name is remembered and
	// gossiped; 0 = the DNS server's default.
	DNSTombstoneTTL time.Duration
	MTU             int          // pod MTU; 0 = auto
	WGPort          uint16       // WireGuard UDP port
	WGIface         string       // WireGuard interface
	VXIface         string       // VXLAN interface
	VXPort          uint16       // VXLAN UDP port
	Bridge          string       // bridge interface
	NoMasquerade    bool         // skip the egress nft table
	Peers           []string     // PEER arguments: host or host:port
	Logger          *slog.Logger // nil = discard
	// DatapathCommand starts the userspace WireGuard process; nil = this
	// executable's `datapath` subcommand.
	DatapathCommand []string
	// ExternalDatapath: never start the userspace datapath; wait for the
	// one run by `weft datapath` in a container of its own (Kubernetes),
	// so that replacing this peer's container never ends it.
	ExternalDatapath bool
	// ResyncInterval is the router's drift-repair period.
	ResyncInterval time.Duration
	// ProbePort is the UDP port of the datapath probe that measures which
	// peers this one reaches directly (adjacency.go); 0 = no probe, no
	// relaying.
	ProbePort uint16
	// NoAPI: no API server at all, neither the control socket nor the
	// HTTP listener; the caller uses the Daemon's methods (Allocate, ...)
	// directly. The scale simulator (internal/sim) runs hundreds of peers
	// in one process this way. Not a flag: the CLI and the CNI plugin need
	// the socket.
	NoAPI bool
	// Gossip, when non-nil, adjusts the gossip configuration (tests).
	Gossip func(*gossip.Config)
	// Router, when non-nil, adjusts the router's options (tests and the
	// scale simulator, internal/sim: a fake kernel and WireGuard device).
	Router func(*router.Options)

	// Kubernetes mode (kube.go): the peer is its Node's. Name is the Node's
	// name; targets follow the other Nodes; the default IPAllocInit is
	// consensus=number of Nodes; the space of a peer whose Node is deleted
	// is reclaimed once the peer is down. A Kubeconfig implies it.
	Kubernetes bool
	Kubeconfig string // kubeconfig file; "" = in-cluster configuration
	// KubeStartTimeout bounds New's wait for the API server to list this
	// peer's Node.
	KubeStartTimeout time.Duration
	// Kube, when non-nil, adjusts the Kubernetes client configuration
	// (tests: kube/kubefake over a fake clientset).
	Kube func(*kube.Config)
	// NetworkPolicy: enforce the cluster's NetworkPolicies for this
	// Node's pods (Kubernetes mode only; policy.go).
	NetworkPolicy bool
	// PolicyConn, when non-nil, is the nftables connection of the policy
	// table (tests: nfttest); nil = netlink in the host's namespace.
	PolicyConn nft.Conn

	// DNSLocalAddress, when valid, is a node-local DNS address (the same on
	// every node, e.g. 169.254.20.10): it is put as a /32 on the dummy
	// device DNSLocalIface and served on port 53 besides the bridge
	// address.
	DNSLocalAddress netip.Addr
	DNSLocalIface   string // dummy device holding DNSLocalAddress (router.Config.LocalIface)

	// Underlay mode (underlay.go): macvlan pods on the LAN, addressed from
	// UnderlayRange, a part of the underlay interface's subnet; invalid =
	// off.
	UnderlayRange     netip.Prefix
	UnderlayGateway   netip.Addr    // LAN gateway of macvlan pods; invalid = the underlay interface's default gateway
	UnderlayProbeWait time.Duration // how long an ARP probe listens for an answer
	MacvlanIface      string        // the host's own macvlan device (router.Macvlan.Iface)
}

// DefaultConfig returns the defaults of docs/design.md.
func DefaultConfig() Config {
	rd := router.DefaultConfig()
	return Config{
		DataDir:        "/var/lib/weft",
		Socket:         client.DefaultSocket,
		HTTPAddr:       "127.0.0.1:6784",
		Listen:         "0.0.0.0:6783",
		Transport:      rd.Transport,
		IPAllocRange:   ipam.DefaultConfig().Range,
		DNSDomain:      "weft.local.",
		DNSTTL:         5 * time.Second,
		WGPort:         rd.WGPort,
		WGIface:        wg.DefaultConfig().Name,
		VXIface:        rd.VXIface,
		VXPort:         rd.VXPort,
		Bridge:         rd.Bridge,
		ResyncInterval: 10 * time.Second,
		ProbePort:      6785,

		KubeStartTimeout: 2 * time.Minute,
		NetworkPolicy:    true,
		DNSLocalIface:    rd.LocalIface,

		UnderlayProbeWait: 200 * time.Millisecond,
		MacvlanIface:      rd.Macvlan.Iface,
	}
}

var (
	// ErrNeedSecret means a joining peer has no cluster secret.
	ErrNeedSecret = errors.New("this peer has no cluster secret")
	// ErrJoinRefused means every PEER refused us at the handshake.
	ErrJoinRefused = errors.New("the mesh refused this peer")
)

// Validate reports the first problem with the configuration.
func (c Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("--data-dir is empty")
	}
	if c.NoAPI && c.HTTPAddr != "" {
		return errors.New("--http-addr needs the API server (NoAPI is set)")
	}
	if c.Socket == "" && !c.NoAPI {
		return errors.New("--socket is empty")
	}
	if _, _, err := splitHostPort(c.Listen); err != nil {
		return fmt.Errorf("--listen %q: %w", c.Listen, err)
	}
	if c.Advertise != "" {
		if _, err := netip.ParseAddr(c.Advertise); err != nil {
			return fmt.Errorf("--advertise %q: want an IP address", c.Advertise)
		}
	}
	switch c.Transport {
	case "auto", "wireguard", "vxlan", "direct":
	default:
		return fmt.Errorf("--transport %q: want auto, wireguard, vxlan or direct", c.Transport)
	}
	if c.Transport == "wireguard" && c.Insecure {
		return errors.New("--transport wireguard needs a cluster secret; drop --insecure")
	}
	if !c.IPAllocRange.IsValid() || !c.IPAllocRange.Addr().Is4() || c.IPAllocRange.Bits() > 30 || c.IPAllocRange.Bits() < 8 {
		return fmt.Errorf("--ipalloc-range %s: want an IPv4 CIDR from /8 to /30", c.IPAllocRange)
	}
	if c.IPAllocRange.Masked() != c.IPAllocRange {
		return fmt.Errorf("--ipalloc-range %s: host bits set (did you mean %s?)", c.IPAllocRange, c.IPAllocRange.Masked())
	}
	if c.Kubernetes && c.Name == "" {
		return errors.New("Kubernetes mode needs this peer's Node name: set NODE_NAME (a DaemonSet takes it from spec.nodeName) or pass --name")
	}
	if c.Kubernetes && c.KubeStartTimeout <= 0 {
		return fmt.Errorf("Kubernetes mode: start timeout %v: want > 0", c.KubeStartTimeout)
	}
	if c.DNSLocalAddress.IsValid() {
		switch {
		case c.NoDNS:
			return errors.New("--dns-local-address needs the DNS server; drop --no-dns")
		case c.DNSLocalIface == "" || len(c.DNSLocalIface) > 15:
			return fmt.Errorf("--dns-local-iface %q: want an interface name of 1 to 15 bytes", c.DNSLocalIface)
		case !c.DNSLocalAddress.Is4():
			return fmt.Errorf("--dns-local-address %s: want an IPv4 address (the pod network is IPv4)", c.DNSLocalAddress)
		case c.IPAllocRange.Contains(c.DNSLocalAddress):
			return fmt.Errorf("--dns-local-address %s is inside the pod range %s", c.DNSLocalAddress, c.IPAllocRange)
		}
	}
	if err := validateUnderlay(c); err != nil {
		return err
	}
	if c.MTU != 0 && (c.MTU < 576 || c.MTU > 65535) {
		return fmt.Errorf("--mtu %d: want 576..65535 or 0 for auto", c.MTU)
	}
	return nil
}

// splitHostPort splits the gossip listen address: "host:port", or a bare
// host (an IP address, v6 with or without brackets) on the default
// gossip port, as PEER arguments are.
func splitHostPort(s string) (string, int, error) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		if a, aerr := netip.ParseAddr(strings.Trim(s, "[]")); aerr == nil {
			return a.String(), gossip.DefaultPort, nil
		}
		return "", 0, fmt.Errorf("want host:port or an IP address: %w", err)
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > 65535 {
		return "", 0, fmt.Errorf("bad port %q", p)
	}
	return h, n, nil
}
