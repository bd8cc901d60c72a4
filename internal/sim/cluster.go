package sim

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/weftmesh/weft/api/client"
	"github.com/weftmesh/weft/daemon"
	"github.com/weftmesh/weft/gossip"
	"github.com/weftmesh/weft/gossip/gossiptest"
	"github.com/weftmesh/weft/peer"
	"github.com/weftmesh/weft/router"
	"github.com/weftmesh/weft/router/routertest"
)

// Options configures a Cluster. Derive it from DefaultOptions.
type Options struct {
	Dir     string        // state directories (tmpfs is best); "" = a new one under /dev/shm
	Secure  bool          // a cluster secret: encrypted gossip, WireGuard transport
	Latency time.Duration // one-way datagram latency
	Loss    float64       // datagram loss probability, 0..1
	Seed    uint64        // picks each peer's PEER; 0 = random
	// LaunchEvery spaces the launches of Grow (0 = all at once: a mass join).
	LaunchEvery time.Duration
	// Consensus launches every peer with the default IPAM bootstrap
	// (consensus among 1 + its PEERs). Without it, every peer but the first
	// is an observer, as a mass start must be launched (README, "Running
	// a mesh"): peers started at once with different PEER lists, each
	// allowed to divide a ring, can divide two (a 200-peer run did, once
	// in about 25: rings never mix, and the run waits out its limit).
	Consensus bool
	// Gossip, when non-nil, adjusts every peer's gossip configuration.
	Gossip func(*gossip.Config)
	// Memberlist, when non-nil, adjusts every peer's memberlist
	// configuration after weft's (Relaxed is one).
	Memberlist func(*memberlist.Config)
	// Bubble says the cluster runs inside a testing/synctest bubble
	// (virtual time: see Run). Close then lets the goroutines memberlist
	// leaves behind at Shutdown (a probe waiting out its timeout) finish.
	Bubble bool
}

// Relaxed quadruples the probe interval of weft's failure detection (2 s probes, 1 s
// probe timeout, SuspicionMult 6). Hundreds of peers on two cores get
// about 1 % of a core each; in a mass join the process runs behind by
// seconds at times, and production timers read that starvation as
// failures. Tests of behaviour (not of detection time) use this.
func Relaxed(c *memberlist.Config) {
	c.ProbeInterval = 2 * time.Second
	c.ProbeTimeout = time.Second
	c.SuspicionMult = 6
}

// DefaultOptions returns a mass join without latency or loss, insecure
// (encryption costs CPU, not protocol behaviour, in one process).
func DefaultOptions() Options {
	return Options{Latency: 0, Loss: 0}
}

// Peer is one simulated weft peer.
type Peer struct {
	Index  int
	Name   string
	Addr   netip.Addr
	D      *daemon.Daemon
	tr     *gossiptest.Transport
	kernel *routertest.Kernel
	cancel context.CancelFunc
	done   chan error
	killed bool
}

// Cluster is a set of simulated peers on one Network.
type Cluster struct {
	opts   Options
	Net    *gossiptest.Network
	dir    string
	ownDir bool
	secret string
	rnd    *rand.Rand

	mu    sync.Mutex // guards following
	peers []*Peer
}

// NewCluster prepares an empty cluster.
func NewCluster(opts Options) (*Cluster, error) {
	c := &Cluster{opts: opts, Net: &gossiptest.Network{Latency: opts.Latency, Loss: opts.Loss}, dir: opts.Dir}
	if c.dir == "" {
		base := "/dev/shm"
		if st, err := os.Stat(base); err != nil || !st.IsDir() {
			base = os.TempDir()
		}
		d, err := os.MkdirTemp(base, "weftsim-")
		if err != nil {
			return nil, fmt.Errorf("sim dir: %w", err)
		}
		c.dir, c.ownDir = d, true
	}
	seed := opts.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	c.rnd = rand.New(rand.NewPCG(seed, seed^0x5eed))
	if opts.Secure {
		s, err := gossip.NewSecret()
		if err != nil {
			return nil, err
		}
		c.secret = s
	}
	return c, nil
}

// Peers returns the peers, killed ones included, in launch order.
func (c *Cluster) Peers() []*Peer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Peer(nil), c.peers...)
}

// Live returns the peers not killed.
func (c *Cluster) Live() []*Peer {
	var out []*Peer
	for _, p := range c.Peers() {
		if !p.killed {
			out = append(out, p)
		}
	}
	return out
}

// Grow launches n more peers, each with one random earlier peer as its
// PEER (the first of the cluster with none), as an operator would.
func (c *Cluster) Grow(n int) error {
	for range n {
		if err := c.launch(); err != nil {
			return err
		}
		if c.opts.LaunchEvery > 0 {
			time.Sleep(c.opts.LaunchEvery)
		}
	}
	return nil
}

func (c *Cluster) launch() error {
	c.mu.Lock()
	i := len(c.peers)
	var target string
	if i > 0 {
		target = c.peers[c.rnd.IntN(i)].Addr.String() + ":6783"
	}
	c.mu.Unlock()
	addr := AddrOf(i + 1)
	name := fmt.Sprintf("p%04d", i)
	dir := filepath.Join(c.dir, name)
	tr := c.Net.NewTransportAt(name, netip.AddrPortFrom(addr, 6783))
	k := routertest.NewKernel()
	k.Quiet() // the simulator reads the kernel's state, never its transcript
	k.SetUnderlay(addr, routertest.Underlay("eth0", 1500, netip.PrefixFrom(addr, 16).Masked().String()))
	wg := routertest.NewWG(k)
	wg.Quiet()
	wgf := wg.Factory()

	cfg := daemon.DefaultConfig()
	cfg.Name = name
	cfg.DataDir = dir
	cfg.NoAPI, cfg.Socket, cfg.HTTPAddr = true, "", "" // the sim calls the daemon's methods
	cfg.ProbePort = 0                                  // the fake kernel carries no datapath probes
	cfg.Listen = addr.String() + ":6783"
	cfg.Advertise = addr.String()
	cfg.Insecure = !c.opts.Secure
	cfg.Password = c.secret
	if target != "" {
		cfg.Peers = []string{target}
		if !c.opts.Consensus {
			cfg.IPAllocInit = "observer"
		}
	}
	cfg.Gossip = func(g *gossip.Config) {
		g.Memberlist = func(mc *memberlist.Config) {
			mc.Transport = tr
			if c.opts.Memberlist != nil {
				c.opts.Memberlist(mc)
			}
		}
		if c.opts.Gossip != nil {
			c.opts.Gossip(g)
		}
	}
	cfg.Router = func(o *router.Options) { o.Kernel, o.WireGuard = k, wgf }
	d, err := daemon.New(cfg)
	if err != nil {
		return fmt.Errorf("launch %s: %w", name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Peer{Index: i, Name: name, Addr: addr, D: d, tr: tr, kernel: k, cancel: cancel, done: make(chan error, 1)}
	go func() { p.done <- d.Run(ctx) }()
	c.mu.Lock()
	c.peers = append(c.peers, p)
	c.mu.Unlock()
	return nil
}

// Kill crashes peer i: its network goes silent at once (no goodbye), then
// its daemon is stopped.
func (c *Cluster) Kill(i int) {
	c.mu.Lock()
	p := c.peers[i]
	p.killed = true
	c.mu.Unlock()
	p.tr.Shutdown()
	p.stop()
}

func (p *Peer) stop() {
	if p.cancel == nil {
		return
	}
	p.cancel()
	<-p.done
	p.cancel = nil
}

// Partition cuts the live peers into two groups: the first frac of them
// and the rest.
func (c *Cluster) Partition(frac float64) {
	live := c.Live()
	cut := int(float64(len(live)) * frac)
	for j, p := range live {
		g := 0
		if j >= cut {
			g = 1
		}
		c.Net.SetGroup(p.Name, g)
	}
}

// Heal ends every partition.
func (c *Cluster) Heal() { c.Net.Heal() }

// AllocatePods asks every live peer for one pod address through the API
// code path the CNI plugin uses (with a DNS name), and returns the
// addresses by container ID.
func (c *Cluster) AllocatePods(ctx context.Context) (map[string]netip.Prefix, error) {
	live := c.Live()
	type res struct {
		id  string
		p   netip.Prefix
		err error
	}
	out := make(chan res, len(live))
	for _, p := range live {
		go func() {
			id := "ctr-" + p.Name
			a, err := p.D.Allocate(ctx, client.AllocateRequest{ID: id, Pod: "pod-" + p.Name + ".default"})
			if err != nil {
				out <- res{id: id, err: err}
				return
			}
			pf, err := netip.ParsePrefix(a.Address)
			out <- res{id: id, p: pf, err: err}
		}()
	}
	got := map[string]netip.Prefix{}
	var errs []error
	for range live {
		r := <-out
		if r.err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.id, r.err))
			continue
		}
		got[r.id] = r.p
	}
	return got, errors.Join(errs...)
}

// Counters are totals over the live peers, for rates over a window.
type Counters struct {
	Bytes       uint64 // sent plus received by the transports
	StreamBytes uint64 // the part of Bytes on streams (push-pulls, large messages)
	Full        uint64 // full datagrams sent: a backlog of broadcasts (gossiptest.FullDatagram)
	Dials       uint64 // streams dialed (memberlist's TCP: push-pulls, reliable sends)
	MemberSyncs uint64 // membership push-pulls started by anti-entropy
	Repairs     uint64 // channel states found different by anti-entropy
}

// Count returns the live peers' counters.
func (c *Cluster) Count() Counters {
	var n Counters
	for _, p := range c.Live() {
		s, r := p.tr.Bytes()
		n.Bytes += s + r
		n.StreamBytes += p.tr.StreamBytes()
		n.Full += p.tr.FullDatagrams()
		n.Dials += p.tr.Dials()
		n.MemberSyncs += p.D.Mesh().MemberSyncs()
		n.Repairs += p.D.Mesh().Repairs()
	}
	return n
}

// CPU returns the process's user+system CPU time so far.
func CPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// drainTime outlasts every timeout a stopped memberlist goroutine may
// still wait out (probe, TCP fallback ping, push-pull: 10 s at most).
const drainTime = time.Minute

// Close stops every peer and removes the state directories.
func (c *Cluster) Close() {
	var wg sync.WaitGroup
	for _, p := range c.Peers() {
		wg.Go(func() {
			p.tr.Shutdown() // no goodbyes: nobody is left to hear them
			p.stop()
		})
	}
	wg.Wait()
	if c.opts.Bubble {
		// memberlist's Shutdown does not wait for its probe and
		// push-pull goroutines; each ends within a timeout (seconds).
		// A bubble must be empty when its function returns, and its
		// time stops then: run the clock on until they are gone.
		time.Sleep(drainTime)
	}
	if c.ownDir {
		os.RemoveAll(c.dir)
	}
}

// peerIDs maps names to IDs of the given peers.
func peerIDs(ps []*Peer) map[peer.ID]*Peer {
	m := make(map[peer.ID]*Peer, len(ps))
	for _, p := range ps {
		m[p.D.Identity().ID] = p
	}
	return m
}
