package router

// The Router holds the desired state and drives reconciliation: the first
// Set (and every Set while Run is not running) reconciles synchronously;
// while Run runs, Set only records the state and Run coalesces bursts
// (Debounce) before reconciling once, and resyncs every ResyncInterval to
// repair drift (a route or neighbour deleted by hand comes back).

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/weftmesh/weft/peer"
)

// wgSetupTimeout bounds the creation of the WireGuard device, which may
// start the userspace datapath process.
const wgSetupTimeout = 30 * time.Second

// Router reconciles the host's datapath to a desired Config.
type Router struct {
	opts    Options
	base    *slog.Logger // as given, for router/wg's own component attribute
	log     *slog.Logger
	kernel  Kernel
	factory WGFactory
	kick    chan struct{} // capacity 1: a Set happened while Run runs

	// Lock order: recMu before mu.
	recMu sync.Mutex // guards following: kernel access and the WireGuard device
	// wg is written holding recMu and mu (setWG), so it may be read
	// holding either: Stats reads it under mu alone, so that a reading
	// (status, the adjacency loop's counters) does not wait for a
	// reconcile in progress, which in a mass join takes seconds. The
	// device is safe for concurrent use; one closed meanwhile answers
	// with an error, read as no counters.
	wg        WGDevice
	wgApplied *wgApplied
	applied   *applied // nil = the next reconcile is a full one (incremental.go)

	mu         sync.Mutex // guards following
	desired    Config
	haveCfg    bool
	gen        uint64 // bumped by every record: which desired state
	okGen      uint64 // the gen last reconciled without error
	skipped    uint64 // Sets that changed nothing (see Set)
	running    bool
	mtu        int
	transports map[peer.ID]string
	via        map[peer.ID]peer.ID
	keyToID    map[string]peer.ID
	// lastStats is the last reading Stats made (LastStats).
	lastStats map[peer.ID]PeerStats
}

// setWG sets the WireGuard device (nil: none) and forgets what was
// applied to the one before. Caller holds recMu.
func (r *Router) setWG(dev WGDevice) {
	r.mu.Lock()
	r.wg = dev
	r.mu.Unlock()
	r.wgApplied = nil
}

// New returns a Router; nothing touches the kernel before the first Set.
func New(opts Options) (*Router, error) {
	if opts.ResyncInterval == 0 {
		opts.ResyncInterval = 10 * time.Second
	}
	if opts.Debounce == 0 {
		opts.Debounce = 200 * time.Millisecond
	}
	if opts.ResyncInterval < 0 || opts.Debounce < 0 {
		return nil, fmt.Errorf("%w: negative interval", ErrInvalidConfig)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	r := &Router{opts: opts, base: log, log: log.With("component", "router"), kernel: opts.Kernel,
		factory: opts.WireGuard, kick: make(chan struct{}, 1)}
	if r.kernel == nil {
		k, err := NewNetlinkKernel(NetlinkOptions{})
		if err != nil {
			return nil, fmt.Errorf("router: %w", err)
		}
		r.kernel = k
	}
	if r.factory == nil {
		r.factory = defaultWGFactory
		if k, ok := r.kernel.(*NetlinkKernel); ok {
			r.factory = NetNSWGFactory(k)
		}
	}
	return r, nil
}

// Set stores cfg as the desired state and reconciles: synchronously the
// first time and whenever Run is not running, debounced in Run otherwise.
//
// While Run runs, a Set equal to the desired state already applied
// without error does nothing: the daemon hands the full state every 2 s,
// and an idle mesh's pass would otherwise plan, read the underlay and diff
// every peer to find nothing. Drift (an entry changed by hand) is repaired
// by the periodic resync, as before; a failed reconcile is retried by the
// next Set.
func (r *Router) Set(cfg Config) error {
	r.mu.Lock()
	same := r.running && r.haveCfg && r.okGen == r.gen && sameConfig(cfg, r.desired)
	if same {
		r.skipped++
	}
	r.mu.Unlock()
	if same {
		return nil
	}
	now, err := r.record(cfg)
	if err != nil || now {
		return err
	}
	select {
	case r.kick <- struct{}{}:
	default:
	}
	return nil
}

// SetNow is Set applied at once, without the debounce: for a change that
// other peers apply at the same moment (a relay switch, daemon/switch.go),
// where 200 ms of coalescing on one end only would be 200 ms of loss.
func (r *Router) SetNow(cfg Config) error {
	if now, err := r.record(cfg); err != nil || now {
		return err
	}
	return r.reconcile(context.Background(), false)
}

// record makes cfg the desired state; if this is the first, or Run is not
// running, it reconciles at once (now is true).
func (r *Router) record(cfg Config) (now bool, err error) {
	if err := cfg.Validate(); err != nil {
		return false, err
	}
	cfg.Local = slices.Clone(cfg.Local)
	cfg.Peers = slices.Clone(cfg.Peers)
	slices.SortFunc(cfg.Peers, byPeerID) // as makePlan takes them (no copy there)
	cfg.Unreachable = slices.Clone(cfg.Unreachable)
	r.mu.Lock()
	first := !r.haveCfg
	r.desired, r.haveCfg = cfg, true
	r.gen++
	running := r.running
	r.mu.Unlock()
	if first || !running {
		return true, r.reconcile(context.Background(), false)
	}
	return false, nil
}

// Resync reconciles the current desired state in full now, as the
// periodic resync does: it reads the kernel and repairs drift (an entry
// or device changed by hand) that a Set, which applies only what changed
// in the desired state, leaves to the next resync.
func (r *Router) Resync() error { return r.reconcile(context.Background(), true) }

// reconcile applies the current desired state.
func (r *Router) reconcile(ctx context.Context, force bool) error {
	r.recMu.Lock()
	defer r.recMu.Unlock()
	r.mu.Lock()
	cfg, ok, gen := r.desired, r.haveCfg, r.gen
	r.mu.Unlock()
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, wgSetupTimeout)
	defer cancel()
	start := time.Now()
	p, err := r.reconcileLocked(ctx, cfg, force)
	keys := map[string]peer.ID{}
	for _, pr := range cfg.Peers {
		if pr.WGPublicKey != "" {
			keys[pr.WGPublicKey] = pr.ID
		}
	}
	r.mu.Lock()
	r.mtu, r.transports, r.via, r.keyToID = p.mtu, p.transports, p.via, keys
	if err == nil {
		r.okGen = gen
	} else {
		r.okGen = 0 // gen starts at 1: the next Set is never skipped
	}
	r.mu.Unlock()
	r.log.Debug("reconciled", "peers", len(cfg.Peers), "routes", len(p.routes),
		"took", time.Since(start), "err", err)
	if err != nil {
		return fmt.Errorf("router reconcile: %w", err)
	}
	return nil
}

// Run debounces Set and resyncs periodically until ctx is done. On return
// it releases the WireGuard handle; the device keeps forwarding.
func (r *Router) Run(ctx context.Context) error {
	r.mu.Lock()
	if r.running {
		r.mu.Unlock()
		return fmt.Errorf("router run: already running")
	}
	r.running = true
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.running = false
		r.mu.Unlock()
		r.recMu.Lock()
		if r.wg != nil {
			_ = r.wg.Close()
			r.setWG(nil)
		}
		r.recMu.Unlock()
	}()

	resync := time.NewTicker(r.opts.ResyncInterval)
	defer resync.Stop()
	debounce := time.NewTimer(0)
	if !debounce.Stop() {
		<-debounce.C
	}
	pending := false
	if err := r.reconcile(ctx, false); err != nil { // retry what a synchronous Set may have left
		r.log.Warn("reconcile failed; retrying at next resync", "err", err)
	}
	for {
		select {
		case <-ctx.Done():
			debounce.Stop()
			return nil
		case <-r.kick:
			if !pending {
				pending = true
				debounce.Reset(r.opts.Debounce)
			}
		case <-debounce.C:
			pending = false
			if err := r.reconcile(ctx, false); err != nil {
				r.log.Warn("reconcile failed; retrying at next resync", "err", err)
			}
		case <-resync.C:
			if err := r.reconcile(ctx, true); err != nil {
				r.log.Warn("resync failed", "err", err)
			}
		}
	}
}

// sameConfig reports whether a and b are the same desired state. The
// peer list, O(N), is compared field by field (reflect.DeepEqual on it was
// 3 % of a 300-peer simulation's CPU); the rest with DeepEqual.
func sameConfig(a, b Config) bool {
	if !slices.EqualFunc(a.Peers, b.Peers, samePeer) {
		return false
	}
	a.Peers, b.Peers = nil, nil
	return reflect.DeepEqual(a, b)
}

// samePeer compares every field of Peer (TestSamePeer fails when a field
// is added and not compared here).
func samePeer(a, b Peer) bool {
	return a.ID == b.ID && a.Name == b.Name && a.Underlay == b.Underlay &&
		a.WGPublicKey == b.WGPublicKey && a.WGPort == b.WGPort && a.Bridge == b.Bridge &&
		slices.Equal(a.Ranges, b.Ranges) && slices.Equal(a.Accept, b.Accept) &&
		slices.Equal(a.Unreachable, b.Unreachable)
}

// Skipped returns how many Sets changed nothing and were skipped.
func (r *Router) Skipped() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.skipped
}

// MTU returns the pod MTU in effect (0 before the first Set).
func (r *Router) MTU() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.mtu
}

// PeerTransport returns the transport used to reach the peer: wireguard,
// vxlan, direct, none (unreachable with this configuration), or "" for an
// unknown peer.
func (r *Router) PeerTransport(id peer.ID) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.transports[id]
}

// PeerVia returns the relay that carries this peer's traffic to the peer
// (paths.go), or ok false when it goes direct or the peer is unknown.
func (r *Router) PeerVia(id peer.ID) (relay peer.ID, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	relay, ok = r.via[id]
	return relay, ok
}

// Stats returns WireGuard counters per peer; peers without WireGuard are
// absent. It does not wait for a reconcile in progress, only for a
// WireGuard configuration under way (the device serializes its calls).
func (r *Router) Stats() map[peer.ID]PeerStats {
	r.mu.Lock()
	dev := r.wg
	keys := maps.Clone(r.keyToID)
	r.mu.Unlock()
	var st map[string]WGPeerStats
	var err error
	if dev != nil {
		st, err = dev.Stats()
	}
	out := map[peer.ID]PeerStats{}
	if err != nil {
		r.log.Debug("wireguard stats", "err", err)
	}
	for k, s := range st {
		id, ok := keys[k]
		if !ok {
			continue
		}
		ps := PeerStats{LastHandshake: s.LastHandshake, RxBytes: s.RxBytes, TxBytes: s.TxBytes}
		if s.Endpoint.IsValid() {
			ps.Endpoint = s.Endpoint.String()
		}
		out[id] = ps
	}
	if err == nil && dev != nil {
		r.mu.Lock()
		r.lastStats = out
		r.mu.Unlock()
	}
	return out
}

// LastStats returns the last reading Stats made (nil before the first),
// without asking the device. The map is the caller's to read, not to
// change.
func (r *Router) LastStats() map[peer.ID]PeerStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastStats
}
