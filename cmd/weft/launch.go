package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/weftmesh/weft/api/client"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/weftmesh/weft/cmd/internal/datapathcmd"
	"github.com/weftmesh/weft/cni"
	"github.com/weftmesh/weft/daemon"
	"github.com/weftmesh/weft/router"
	"github.com/weftmesh/weft/router/wg"
	"k8s.io/klog/v2"
)

func versionString() string {
	v := daemon.Version
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += "+" + s.Value[:12]
			}
		}
	}
	return v
}

type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

// parseInterspersed parses flags wherever they stand among positional
// arguments (Go's flag package stops at the first positional one).
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func launch(args []string) error {
	cfg := daemon.DefaultConfig()
	fs := flag.NewFlagSet("weft launch", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: weft launch [flags] [PEER...]\n\nRuns this machine's weft peer in the foreground and joins the mesh through\nany PEER (host or host:port). Flags:\n")
		fs.PrintDefaults()
	}
	var (
		passwordFile, logLevel, rng string
		dnsListen, dnsUpstream      listFlag
		wgPort, vxPort              uint
		dnsLocal                    string
		inCluster                   bool
	)
	sock := os.Getenv("WEFT_SOCKET")
	if sock == "" {
		sock = cfg.Socket
	}
	fs.StringVar(&cfg.Name, "name", "", "peer name (default: stored name, else the hostname; Kubernetes mode: NODE_NAME)")
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "state directory: identity, keys, secret, IPAM")
	fs.StringVar(&cfg.Socket, "socket", sock, "unix control socket (CLI, CNI plugin)")
	fs.StringVar(&cfg.HTTPAddr, "http-addr", cfg.HTTPAddr, "read-only HTTP API, status page and /metrics (\"\" = off)")
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "gossip address host:port (TCP+UDP)")
	fs.StringVar(&cfg.Advertise, "advertise", "", "address other peers reach this one on (default: detected)")
	fs.StringVar(&passwordFile, "password-file", "", "file holding the cluster secret (or set WEFT_PASSWORD)")
	fs.BoolVar(&cfg.Insecure, "insecure", false, "run without a cluster secret: no gossip encryption, no WireGuard")
	fs.StringVar(&cfg.Transport, "transport", cfg.Transport, "datapath: auto, wireguard, vxlan or direct")
	fs.StringVar(&rng, "ipalloc-range", cfg.IPAllocRange.String(), "pod address range")
	fs.StringVar(&cfg.IPAllocInit, "ipalloc-init", "", "ring bootstrap: consensus=N, seed=NAME,..., observer (default consensus=1+number of PEERs; Kubernetes mode: number of Nodes)")
	fs.StringVar(&cfg.DNSDomain, "dns-domain", cfg.DNSDomain, "DNS domain for pod names")
	fs.Var(&dnsListen, "dns-listen", "extra DNS listen address host:port (repeatable; the bridge address port 53 is always served)")
	fs.Var(&dnsUpstream, "dns-upstream", "upstream DNS server (repeatable; default: /etc/resolv.conf)")
	fs.BoolVar(&cfg.NoDNS, "no-dns", false, "do not run the DNS server")
	fs.StringVar(&dnsLocal, "dns-local-address", "", "also serve DNS on this node-local address, the same on every node (e.g. 169.254.20.10), put on --dns-local-iface")
	fs.StringVar(&cfg.DNSLocalIface, "dns-local-iface", cfg.DNSLocalIface, "dummy interface holding --dns-local-address")
	fs.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "Kubernetes mode through this kubeconfig: the peer is its Node's (name NODE_NAME or --name, peers the other Nodes)")
	fs.BoolVar(&inCluster, "kubernetes", false, "Kubernetes mode with the pod's service account (default: on when in a pod, i.e. KUBERNETES_SERVICE_HOST is set; =false turns it off)")
	fs.BoolVar(&cfg.NetworkPolicy, "network-policy", cfg.NetworkPolicy, "in Kubernetes mode, enforce the cluster's NetworkPolicies for this Node's pods (=false: no enforcement, and the policy table is removed)")
	fs.DurationVar(&cfg.DNSTTL, "dns-ttl", cfg.DNSTTL, "TTL of answers for pod names")
	fs.DurationVar(&cfg.DNSTombstoneTTL, "dns-tombstone-ttl", 0, "how long a removed DNS name is remembered (0 = 30m; tests shorten it)")
	fs.IntVar(&cfg.MTU, "mtu", 0, "pod MTU (0 = underlay MTU minus encapsulation)")
	fs.UintVar(&wgPort, "wg-port", uint(cfg.WGPort), "WireGuard UDP port")
	fs.StringVar(&cfg.WGIface, "wg-iface", cfg.WGIface, "WireGuard interface name")
	fs.UintVar(&vxPort, "vxlan-port", uint(cfg.VXPort), "VXLAN UDP port")
	fs.StringVar(&cfg.Bridge, "bridge", cfg.Bridge, "bridge interface for local pods")
	var underlayRange, underlayGW string
	fs.StringVar(&underlayRange, "underlay-range", "", "underlay pool for macvlan pods: a CIDR inside the subnet of the interface holding the advertise address, the same on every peer (e.g. 192.168.1.128/25; default: no underlay mode)")
	fs.StringVar(&underlayGW, "underlay-gateway", "", "default gateway of macvlan pods (default: the underlay interface's default gateway)")
	fs.DurationVar(&cfg.UnderlayProbeWait, "underlay-probe-wait", cfg.UnderlayProbeWait, "how long the ARP probe of a new underlay address waits for an answer")
	fs.StringVar(&cfg.MacvlanIface, "macvlan-iface", cfg.MacvlanIface, "the host's own macvlan interface (reaches local macvlan pods)")
	ic := cni.DefaultInstallConfig()
	installCNI := fs.Bool("install-cni", false, "once the peer can serve pods, install weft-cni and the conflist (Kubernetes: the node turns Ready then)")
	fs.StringVar(&ic.BinDir, "cni-bin-dir", ic.BinDir, "with --install-cni: CNI binary directory")
	fs.StringVar(&ic.ConfDir, "cni-conf-dir", ic.ConfDir, "with --install-cni: CNI configuration directory")
	fs.BoolVar(&cfg.ExternalDatapath, "external-datapath", false, "never start the userspace WireGuard datapath; wait for the one run by 'weft datapath' (its own container in Kubernetes)")
	fs.BoolVar(&cfg.NoMasquerade, "no-masquerade", false, "do not masquerade pod egress")
	fs.DurationVar(&cfg.ResyncInterval, "resync", cfg.ResyncInterval, "period of the datapath's drift repair")
	fs.Func("probe-port", fmt.Sprintf("UDP port of the datapath probe that finds broken links to route around (0 = off; default %d)", cfg.ProbePort), func(v string) error {
		n, err := strconv.ParseUint(v, 10, 16)
		if err != nil {
			return fmt.Errorf("want a UDP port 0..65535")
		}
		cfg.ProbePort = uint16(n)
		return nil
	})
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	peers, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err.Error()}
	}
	cfg.Peers = peers
	cfg.DNSListen, cfg.DNSUpstream = dnsListen, dnsUpstream
	kubeSet := false
	fs.Visit(func(f *flag.Flag) { kubeSet = kubeSet || f.Name == "kubernetes" })
	if cfg.Kubernetes, err = kubeMode(kubeSet, inCluster, cfg.Kubeconfig, os.Getenv("KUBERNETES_SERVICE_HOST")); err != nil {
		return usageError{err.Error()}
	}
	if cfg.Kubernetes && cfg.Name == "" {
		cfg.Name = os.Getenv("NODE_NAME")
	}
	if dnsLocal != "" {
		if cfg.DNSLocalAddress, err = netip.ParseAddr(dnsLocal); err != nil {
			return usageError{fmt.Sprintf("--dns-local-address %q: want an IP address", dnsLocal)}
		}
	}
	cfg.WGPort, cfg.VXPort = uint16(wgPort), uint16(vxPort)
	if cfg.IPAllocRange, err = netip.ParsePrefix(rng); err != nil {
		return usageError{fmt.Sprintf("--ipalloc-range %q: %v", rng, err)}
	}
	if underlayRange != "" {
		if cfg.UnderlayRange, err = netip.ParsePrefix(underlayRange); err != nil {
			return usageError{fmt.Sprintf("--underlay-range %q: %v", underlayRange, err)}
		}
	}
	if underlayGW != "" {
		if cfg.UnderlayGateway, err = netip.ParseAddr(underlayGW); err != nil {
			return usageError{fmt.Sprintf("--underlay-gateway %q: want an IP address", underlayGW)}
		}
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
		return usageError{fmt.Sprintf("--log-level %q: want debug, info, warn or error", logLevel)}
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	cfg.Logger = log
	if cfg.Kubernetes {
		// client-go logs through klog, a process-wide logger: its lines
		// (watch errors, retries) join ours, in our format.
		klog.SetSlogLogger(log.With("component", "client-go"))
	}
	switch {
	case passwordFile != "":
		b, err := os.ReadFile(passwordFile)
		if err != nil {
			return fmt.Errorf("--password-file: %w", err)
		}
		if cfg.Password = strings.TrimSpace(string(b)); cfg.Password == "" {
			return fmt.Errorf("--password-file %s is empty", passwordFile)
		}
	case os.Getenv("WEFT_PASSWORD") != "":
		cfg.Password = strings.TrimSpace(os.Getenv("WEFT_PASSWORD"))
	}
	if cfg.Insecure && cfg.Password != "" {
		return usageError{"--insecure and a cluster secret exclude each other"}
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	cfg.DatapathCommand = append(wg.DatapathCommand(exe), "--log-level", logLevel)

	d, err := daemon.New(cfg)
	if err != nil {
		return err
	}
	id := d.Identity()
	log.Info("weft peer starting", "name", id.Name, "id", id.ID, "version", versionString(),
		"gossip", d.GossipAddr(), "socket", cfg.Socket, "http", cfg.HTTPAddr, "insecure", cfg.Insecure, "kubernetes", cfg.Kubernetes)
	if cfg.Insecure {
		log.Warn("running --insecure: gossip is not encrypted and pod traffic is not encrypted")
	}
	if secret, created := d.SecretCreated(); created {
		fmt.Fprintf(os.Stderr, "\nweft: this is the first peer of a new mesh; its cluster secret is stored in %s.\n"+
			"To add another machine, copy the secret there and run:\n\n"+
			"  echo '%s' > /etc/weft.password && weft launch --password-file /etc/weft.password %s\n\n",
			filepath.Join(cfg.DataDir, "secret"), secret, d.GossipAddr().Addr())
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if *installCNI {
		ic.Socket, ic.DataDir = cfg.Socket, cfg.DataDir
		if ic.BinSrc, err = defaultCNIBinary(); err != nil {
			return err
		}
		go func() {
			if err := installCNIWhenReady(ctx, ic, log); err != nil && ctx.Err() == nil {
				log.Error("install CNI plugin", "err", err)
			}
		}()
	}
	err = d.Run(ctx)
	if err != nil {
		return err
	}
	log.Info("weft peer stopped")
	return nil
}

// kubeMode decides Kubernetes mode: --kubernetes when given (true or
// false), else on with a kubeconfig or inside a pod (serviceHost is
// KUBERNETES_SERVICE_HOST).
func kubeMode(flagSet, flagVal bool, kubeconfig, serviceHost string) (bool, error) {
	switch {
	case flagSet && !flagVal && kubeconfig != "":
		return false, errors.New("--kubernetes=false and --kubeconfig exclude each other")
	case flagSet:
		return flagVal, nil
	}
	return kubeconfig != "" || serviceHost != "", nil
}

// datapath is the hidden subcommand that runs the userspace WireGuard
// device; it outlives `weft launch` so restarts never cut pod traffic.
func datapath(args []string) error {
	err := datapathcmd.Run("weft datapath", args)
	if errors.Is(err, datapathcmd.ErrUsage) {
		return usageError{err.Error()}
	}
	return err
}

func setupCNI(args []string) error {
	ic := cni.DefaultInstallConfig()
	fs := flag.NewFlagSet("weft setup-cni", flag.ContinueOnError)
	fs.StringVar(&ic.BinDir, "bin-dir", ic.BinDir, "CNI binary directory")
	fs.StringVar(&ic.ConfDir, "conf-dir", ic.ConfDir, "CNI configuration directory")
	fs.StringVar(&ic.BinSrc, "cni-bin", "", "weft-cni binary to install (default: next to this weft binary)")
	fs.StringVar(&ic.Socket, "socket", ic.Socket, "peer socket the plugin talks to")
	fs.StringVar(&ic.DataDir, "data-dir", ic.DataDir, "peer data directory")
	if _, err := parseInterspersed(fs, args); err != nil {
		return usageError{err.Error()}
	}
	if ic.BinSrc == "" {
		var err error
		if ic.BinSrc, err = defaultCNIBinary(); err != nil {
			return err
		}
	}
	if err := cni.InstallWith(ic); err != nil {
		return err
	}
	fmt.Printf("installed %s into %s and 10-weft.conflist into %s\n", cni.BinaryName, ic.BinDir, ic.ConfDir)
	return nil
}

// reset removes what weft created on this host: the bridge, tunnel
// devices, routes, the nft table and the userspace datapath; with
// --data-dir it also deletes the peer's state.
func reset(args []string) error {
	fs := flag.NewFlagSet("weft reset", flag.ContinueOnError)
	dataDir := fs.String("data-dir", "", "also delete this state directory (identity, IPAM, secret)")
	sock := fs.String("socket", "", "the peer's control socket (default WEFT_SOCKET or /run/weft/weft.sock)")
	rc := router.DefaultConfig()
	fs.StringVar(&rc.Bridge, "bridge", rc.Bridge, "bridge interface")
	fs.StringVar(&rc.WGIface, "wg-iface", rc.WGIface, "WireGuard interface")
	fs.StringVar(&rc.VXIface, "vxlan-iface", rc.VXIface, "VXLAN interface")
	fs.StringVar(&rc.LocalIface, "dns-local-iface", rc.LocalIface, "node-local DNS interface")
	fs.StringVar(&rc.Macvlan.Iface, "macvlan-iface", rc.Macvlan.Iface, "host-side macvlan interface of underlay pods")
	ic := cni.DefaultInstallConfig()
	fs.StringVar(&ic.BinDir, "cni-bin-dir", ic.BinDir, "remove weft-cni from this CNI binary directory")
	fs.StringVar(&ic.ConfDir, "cni-conf-dir", ic.ConfDir, "remove weft's conflist from this CNI configuration directory")
	if _, err := parseInterspersed(fs, args); err != nil {
		return usageError{err.Error()}
	}
	if *sock == "" {
		*sock = os.Getenv("WEFT_SOCKET")
		if *sock == "" {
			*sock = client.DefaultSocket
		}
	}
	// A running peer first hands its address space to a live peer and exits.
	c := client.New(*sock)
	lctx, lcancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer lcancel()
	if err := c.Do(lctx, http.MethodPost, "/leave", nil, nil); err == nil {
		fmt.Println("weft: handed this peer's address space over; the peer is stopping")
		for i := 0; i < 100 && socketAnswers(c); i++ {
			time.Sleep(100 * time.Millisecond)
		}
	} else if !errors.Is(err, client.ErrNotRunning) {
		return fmt.Errorf("%w (stop the peer yourself to reset without handing its space over)", err)
	}
	r, err := router.New(router.Options{})
	if err != nil {
		return err
	}
	if err := r.ResetConfig(rc); err != nil {
		return fmt.Errorf("reset datapath: %w", err)
	}
	if err := daemon.RemovePolicyTable(); err != nil {
		return fmt.Errorf("reset network policy table: %w", err)
	}
	_ = os.Remove(*sock)
	if err := removeCNI(ic.BinDir, ic.ConfDir); err != nil {
		return err
	}
	if *dataDir != "" {
		if err := os.RemoveAll(*dataDir); err != nil {
			return fmt.Errorf("remove %s: %w", *dataDir, err)
		}
	}
	fmt.Println("weft: removed bridge, tunnels, routes, nft tables (masquerade, network policy), node-local DNS device and the CNI plugin")
	return nil
}

func socketAnswers(c *client.Client) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := c.Ready(ctx)
	return err == nil
}
