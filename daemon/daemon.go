package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/api"
	"github.com/weftmesh/weft/cni/spool"
	"github.com/weftmesh/weft/dns"
	"github.com/weftmesh/weft/gossip"
	"github.com/weftmesh/weft/ipam"
	"github.com/weftmesh/weft/peer"
	"github.com/weftmesh/weft/policy/nft"
	"github.com/weftmesh/weft/router"
	"github.com/weftmesh/weft/router/wg"
)

// Daemon is one running weft peer.
type Daemon struct {
	cfg     Config
	log     *slog.Logger
	id      Identity
	secret  string
	created bool // this peer created the cluster secret
	started time.Time

	mesh   *gossip.Mesh
	alloc  *ipam.Allocator
	dns    *dns.Server  // nil with --no-dns
	kube   *kubeState   // nil outside Kubernetes mode
	policy *policyState // nil unless NetworkPolicy is enforced (Kubernetes mode)
	launch []string     // the peers joined at start: PEERs, plus the other Nodes in Kubernetes mode
	router *router.Router
	api    *api.Server
	ipamCh *gossip.Channel
	dnsCh  *gossip.Channel
	under  *underlayState // nil without --underlay-range (underlay.go)

	kick chan struct{} // asks the sync loop to run now (cap 1)
	// switchKick asks the sync loop to run now, even within its gap: a
	// report takes effect (switch.go). Cap 1.
	switchKick chan struct{}
	// allocUp is who was up in the membership last handed to the
	// allocators (sync.go); the sync loop's alone.
	allocUp map[peer.ID]bool
	liveGen uint64   // the mesh's LivenessGen when syncLiveness last looked
	last    lastPass // the sync loop's last full pass (sync.go); the sync loop's alone
	// ownersSaved is when owners.json was last written (sync.go);
	// ownersDirty, that the table changed since.
	ownersSaved time.Time
	ownersDirty bool
	// metaSem serialises updateMeta (cap 1: held while it holds a value).
	// A channel, not a sync.Mutex: the holder waits up to seconds for
	// memberlist to broadcast, and a goroutine waiting on a channel is
	// durably blocked in a testing/synctest bubble (the scale simulator's
	// virtual time) while one waiting on a mutex is not.
	metaSem chan struct{}
	// statsReading is set while status reads the datapath's counters
	// (statusStats: one read at a time).
	statsReading atomic.Bool

	mu     sync.Mutex // guards following
	bridge netip.Prefix
	// routed is the bridge address once the router has been given it
	// (its first Set is synchronous, so the bridge device exists with that
	// address): what pods may be attached to.
	routed    netip.Prefix
	dnsListen []string
	targets   targetsFile
	// seenSaved is the list of peers seen as last written to the targets
	// file, at seenSavedAt (rememberSeen).
	seenSaved   []string
	seenSavedAt time.Time
	seenAddrs   []netip.AddrPort      // targets.Seen as addresses, sorted: what rememberSeen compares
	owners      map[peer.ID]ownerInfo // what was last known of each ring owner (owners.go)
	prober      *prober               // nil without the datapath probe (adjacency.go)
	reconciles  uint64
	recErrors   uint64
	syncSkipped uint64 // ticker passes skipped: nothing changed (sync.go)
	// Adjacency (adjacency.go): the peers probed and where, the state of
	// each link, and the peers this one cannot reach directly.
	probeTargets map[peer.ID]netip.Addr
	links        map[peer.ID]linkState
	// Route switches (switch.go): our own report (the peers this one
	// cannot reach directly) and each peer's as they take effect, and the
	// wakeup of the sync loop for the next one.
	ownReport   report
	reports     map[peer.ID]report
	switchWhen  time.Time
	switchTimer *time.Timer
	lastRouted  time.Time // when the last router configuration was made
	// reportsApplied counts the unreachable reports (ours and the peers')
	// that took effect; switchPasses the sync passes applied at once for
	// one that matters to this peer (switch.go).
	reportsApplied, switchPasses uint64
	// upSince is when the sync loop saw each up peer come up (its
	// handLiveness): the adjacency loop does not count probe silence from
	// before then against the link.
	upSince map[peer.ID]time.Time
	// relayedAtDown: for each down peer, whether its link with us was
	// relayed both ways when it went down (sync.go peerReports).
	relayedAtDown map[peer.ID]bool
	stop          context.CancelCauseFunc // ends Run (Leave)
}

// errLeft ends Run after a Leave: not an error for the caller.
var errLeft = errors.New("left the mesh")

// New loads or creates the identity and secret and builds every subsystem;
// nothing is joined and no kernel state is touched until Run.
func New(cfg Config) (*Daemon, error) {
	if cfg.Kubeconfig != "" {
		cfg.Kubernetes = true // a kubeconfig means Kubernetes mode
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	d := &Daemon{cfg: cfg, log: log.With("component", "daemon"), started: time.Now(),
		kick: make(chan struct{}, 1), switchKick: make(chan struct{}, 1), metaSem: make(chan struct{}, 1),
		reports: map[peer.ID]report{}}
	if cfg.Kubernetes {
		// Before anything is built: our Node gives the advertise address,
		// the targets and the bootstrap quorum.
		if err := d.startKube(); err != nil {
			return nil, err
		}
	}
	d.launch = mergeStrings(cfg.Peers, d.kubeTargetsNow())
	id, _, err := loadIdentity(cfg.DataDir, cfg.Name)
	if err != nil {
		return nil, err
	}
	d.id = id
	if d.targets, err = loadTargets(cfg.DataDir); err != nil {
		return nil, err
	}
	d.seenSaved = d.targets.Seen
	if d.owners, err = loadOwners(cfg.DataDir); err != nil {
		return nil, err
	}
	if len(cfg.Peers) > 0 {
		d.targets.Targets = mergeStrings(d.targets.Targets, cfg.Peers)
		if err := saveTargets(cfg.DataDir, d.targets); err != nil {
			return nil, err
		}
	}
	if err := d.loadSecret(); err != nil {
		return nil, err
	}
	if err := d.build(log); err != nil {
		d.closeAll()
		return nil, err
	}
	return d, nil
}

// loadSecret picks the cluster secret: given, stored, or new for the first
// peer of a mesh. A peer that is told to join someone and has no secret
// refuses to start: it could never become a member.
func (d *Daemon) loadSecret() error {
	if d.cfg.Insecure {
		return nil
	}
	path := filepath.Join(d.cfg.DataDir, "secret")
	if d.cfg.Password != "" {
		d.secret = d.cfg.Password
		return writeFileAtomic(path, []byte(d.secret+"\n"))
	}
	s, err := readSecretFile(path)
	if err == nil {
		d.secret = s
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if targets := mergeStrings(d.targets.Targets, d.kubeTargetsNow()); len(targets) > 0 {
		return fmt.Errorf("%w: the mesh at %v needs its secret: pass --password-file FILE or set WEFT_PASSWORD (the first peer printed it; in Kubernetes, the Secret of deploy/weft.yaml), or run every peer with --insecure", ErrNeedSecret, targets)
	}
	if d.secret, err = gossip.NewSecret(); err != nil {
		return err
	}
	d.created = true
	return writeFileAtomic(path, []byte(d.secret+"\n"))
}

func (d *Daemon) build(log *slog.Logger) error {
	pub, err := d.id.WGPublicKey()
	if err != nil {
		return err
	}
	host, port, _ := splitHostPort(d.cfg.Listen)
	gc := gossip.DefaultConfig()
	gc.Name, gc.ID = d.id.Name, d.id.ID
	gc.BindAddr, gc.BindPort = host, port
	gc.AdvertiseAddr = d.cfg.Advertise
	gc.Logger = log
	if d.secret != "" {
		gc.Secret = []byte(d.secret)
	}
	gc.Meta = peer.Meta{Version: Version, WGPort: d.cfg.WGPort, Transport: d.transportName(), Insecure: d.cfg.Insecure,
		Joined: len(d.launch) == 0, Underlay: d.cfg.UnderlayRange}
	if !d.cfg.Insecure {
		gc.Meta.WGKey = pub
	}
	if d.cfg.Gossip != nil {
		d.cfg.Gossip(&gc)
	}
	if d.mesh, err = gossip.New(gc); err != nil {
		return err
	}

	init := d.cfg.IPAllocInit
	if init == "" {
		init = fmt.Sprintf("consensus=%d", 1+len(d.cfg.Peers))
	}
	ic := ipam.DefaultConfig()
	ic.Range = d.cfg.IPAllocRange
	if ic.Init, err = ipam.ParseInit(init); err != nil {
		return fmt.Errorf("--ipalloc-init %q: %w", init, err)
	}
	ic.DBPath = filepath.Join(d.cfg.DataDir, "ipam.db")
	ic.Self, ic.Name, ic.Logger = d.id.ID, d.id.Name, log
	ic.BootstrapGate = d.bootstrapAllowed
	ic.Reachable = d.mesh.Reachable          // answer a joiner's donation request before the next sync pass
	ic.RebroadcastInterval = 5 * time.Second // own tokens only: a few hundred bytes
	ringTr := &channelRef{}
	if d.alloc, err = ipam.New(ic, ringTr); err != nil {
		return err
	}
	d.ipamCh = d.mesh.Channel("ipam", d.alloc)
	ringTr.c = d.ipamCh
	if err := d.buildUnderlay(ic, log); err != nil {
		return err
	}

	if !d.cfg.NoDNS {
		dc := dns.DefaultConfig()
		dc.Domain = d.cfg.DNSDomain
		dc.Listen = d.cfg.DNSListen
		dc.Upstreams = d.cfg.DNSUpstream
		dc.Range = d.cfg.IPAllocRange
		dc.Self, dc.Logger = d.id.ID, log
		dc.TTL = d.cfg.DNSTTL
		if d.cfg.DNSTombstoneTTL > 0 {
			dc.TombstoneTTL = d.cfg.DNSTombstoneTTL
		}
		dnsTr := &channelRef{}
		if d.dns, err = dns.New(dc, dnsTr); err != nil {
			return err
		}
		d.dnsCh = d.mesh.Channel("dns", d.dns)
		dnsTr.c = d.dnsCh
		d.dnsListen = d.cfg.DNSListen
	}

	dp := d.cfg.DatapathCommand
	if dp == nil {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find own executable for the datapath process: %w", err)
		}
		dp = wg.DatapathCommand(exe)
	}
	ro := router.Options{DatapathCommand: dp, ExternalDatapath: d.cfg.ExternalDatapath, Logger: log, ResyncInterval: d.cfg.ResyncInterval}
	if d.cfg.Router != nil {
		d.cfg.Router(&ro)
	}
	if d.router, err = router.New(ro); err != nil {
		return err
	}

	if d.kube != nil && d.cfg.NetworkPolicy {
		conn := d.cfg.PolicyConn
		if conn == nil {
			if conn, err = newNftConn(); err != nil {
				return fmt.Errorf("network policy: %w", err)
			}
		}
		var cutter flowCutter = conntrackCutter{}
		if d.cfg.PolicyConn != nil {
			cutter = nil // a fake table: leave the host's conntrack alone
		}
		d.policy = d.newPolicy(nft.NewApplier(conn), cutter)
	}

	if d.cfg.NoAPI {
		return nil
	}
	ac := api.DefaultConfig()
	ac.Socket, ac.HTTPAddr, ac.Logger, ac.Version = d.cfg.Socket, d.cfg.HTTPAddr, log, Version
	if d.api, err = api.New(ac, api.All(d)); err != nil {
		return err
	}
	return nil
}

func (d *Daemon) closeAll() {
	if d.api != nil {
		d.api.Close()
	}
	if d.alloc != nil {
		d.alloc.Close()
	}
	_ = d.closeUnderlay()
	if d.mesh != nil {
		d.mesh.Shutdown()
	}
}

// Identity returns the peer's identity.
func (d *Daemon) Identity() Identity { return d.id }

// SecretCreated returns the new secret when this peer created it (the first
// peer of a mesh), so the caller can print the join command.
func (d *Daemon) SecretCreated() (string, bool) { return d.secret, d.created }

// GossipAddr returns the address other peers join this one on.
func (d *Daemon) GossipAddr() netip.AddrPort { return d.mesh.LocalAddr() }

// channelRef lets ipam and dns be built before the gossip channel that
// carries them (the channel needs the handler, the handler the transport).
type channelRef struct{ c *gossip.Channel }

func (r *channelRef) Broadcast(msg []byte) { r.c.Broadcast(msg) }
func (r *channelRef) SendTo(ctx context.Context, to peer.ID, msg []byte) error {
	return r.c.SendTo(ctx, to, msg)
}

// Run joins the mesh and runs every subsystem until ctx is done or one of
// them fails, then leaves the mesh gracefully. It returns after every
// goroutine has exited.
func (d *Daemon) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	d.mu.Lock()
	d.stop = cancel
	d.mu.Unlock()

	d.mesh.SetTargets(d.joinTargets())
	if len(d.launch) > 0 {
		// Join synchronously once, so that a mesh that refuses us at the
		// handshake (wrong or missing secret) stops us with the reason.
		if err := d.joinLaunch(); err != nil {
			if errors.Is(err, gossip.ErrRefused) {
				d.closeAll()
				return fmt.Errorf("%w: %v", ErrJoinRefused, err)
			}
			d.log.Warn("initial join failed; will keep trying", "err", err)
		}
	}
	d.drainSpool()
	if d.kube != nil && !d.cfg.NetworkPolicy && d.cfg.PolicyConn == nil {
		// Turned off: a table an earlier run left would go on enforcing
		// a program nobody updates.
		if err := RemovePolicyTable(); err != nil {
			d.log.Warn("network policy is off: remove the policy table an earlier run left", "err", err)
		}
	}

	var wg sync.WaitGroup
	start := func(name string, run func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(ctx); err != nil && ctx.Err() == nil {
				cancel(fmt.Errorf("%s: %w", name, err))
			}
		}()
	}
	start("gossip", d.mesh.Run)
	start("ipam", d.alloc.Run)
	d.startUnderlay(start)
	if d.dns != nil {
		start("dns", d.dns.Run)
	}
	start("router", d.router.Run)
	if d.api != nil {
		start("api", d.api.Run)
	}
	start("bridge", d.bridgeLoop)
	start("sync", d.syncLoop)
	if d.cfg.ProbePort != 0 {
		host, _, _ := splitHostPort(d.cfg.Listen)
		if pr, err := newProber(d.id.ID, host, d.cfg.ProbePort, probeEvery); err != nil {
			d.log.Warn("no datapath probe: broken links are not routed around", "err", err)
		} else {
			d.mu.Lock()
			d.prober = pr
			d.mu.Unlock()
			start("adjacency", func(ctx context.Context) error { return d.adjacencyLoop(ctx, pr) })
		}
	}
	if d.kube != nil {
		start("kube", d.kube.client.Run)
		start("kube-sync", d.kubeLoop)
	}
	if d.policy != nil {
		start("policy", d.policyLoop)
		if d.cfg.PolicyConn == nil {
			start("policy-log", d.policyLogLoop)
		}
	}
	<-ctx.Done()
	wg.Wait()
	if errors.Is(context.Cause(ctx), errLeft) {
		// `weft reset` while running: with every goroutine gone, nothing
		// can re-create what this removes.
		if err := d.router.Reset(); err != nil {
			d.log.Warn("reset datapath after leaving", "err", err)
		}
		if d.policy != nil && d.cfg.PolicyConn == nil {
			if err := RemovePolicyTable(); err != nil {
				d.log.Warn("remove the network policy table after leaving", "err", err)
			}
		}
	}
	err := errors.Join(d.alloc.Close(), d.closeUnderlay())
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) && !errors.Is(cause, errLeft) {
		return cause
	}
	return err
}

// joinTargets is what the mesh keeps trying: PEERs and `weft connect`
// targets, plus, for a restarted peer, the addresses of the peers it last
// saw, plus, in Kubernetes mode, the other Nodes' addresses.
func (d *Daemon) joinTargets() []string {
	kt := d.kubeTargetsNow()
	d.mu.Lock()
	defer d.mu.Unlock()
	return mergeStrings(mergeStrings(d.targets.Targets, d.targets.Seen), kt)
}

// haveJoinTargets reports whether joinTargets is not empty, without
// building it (every sync pass asks).
func (d *Daemon) haveJoinTargets() bool {
	if len(d.kubeTargetsNow()) > 0 {
		return true
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.targets.Targets)+len(d.targets.Seen) > 0
}

// joinLaunch joins the launch peers, in parallel: an unreachable one (a
// Node that is down) holds its join for memberlist's TCP timeout and must
// not delay the others. It fails only when none answered; the error then
// wraps gossip.ErrRefused if one of them refused us.
func (d *Daemon) joinLaunch() error {
	errs := make([]error, len(d.launch))
	var wg sync.WaitGroup
	for i, a := range d.launch {
		wg.Go(func() { _, errs[i] = d.mesh.Join([]string{a}) })
	}
	wg.Wait()
	if slices.Contains(errs, nil) {
		return nil
	}
	return errors.Join(errs...)
}

// drainSpool applies releases the CNI plugin recorded while we were down.
func (d *Daemon) drainSpool() {
	dir := spool.Dir(d.cfg.DataDir)
	ids, err := spool.List(dir)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			d.log.Warn("read pending releases", "err", err)
		}
		return
	}
	for _, id := range ids {
		if err := d.release(id); err != nil {
			d.log.Warn("apply pending release", "id", id, "err", err)
			continue
		}
		_ = spool.Remove(dir, id)
		d.log.Info("applied pending release", "id", id)
	}
}

func mergeStrings(a, b []string) []string {
	out := slices.Clone(a)
	if len(b) == 0 {
		return out
	}
	// A set, not a search of out per element: b is the addresses of every
	// peer last seen (joinTargets), thousands at scale.
	have := make(map[string]struct{}, len(a)+len(b))
	for _, s := range a {
		have[s] = struct{}{}
	}
	for _, s := range b {
		if _, ok := have[s]; !ok {
			have[s] = struct{}{}
			out = append(out, s)
		}
	}
	return out
}
