package daemon

// Kubernetes mode. The peer belongs to one Node: its name is the Node's,
// it advertises the Node's InternalIP, and its gossip targets are the
// other Nodes' InternalIPs, following the Node list as Nodes come and go.
// kube/ watches the API and hands over plain Node snapshots; the decisions
// below are pure functions of those snapshots, gossip and the ring
// (kubedecide.go), and this file applies them:
//
//   - targets: every other Node's InternalIP, kept next to the PEER and
//     `weft connect` targets but never persisted (the API is the record);
//   - NetworkUnavailable=False on our Node once this peer has joined and
//     can serve pods (weft's equivalent of Calico's and Weave's
//     condition), patched only while the Node does not show it already;
//   - reclaim on Node deletion: the ring space of a peer whose Node object
//     is gone and which is not up in gossip is taken over through the same
//     Paxos reclaim as `weft rmpeer` (quorum, one winner, refused while the
//     peer is alive anywhere), then the peer is forgotten. Every survivor
//     tries; the losers see "owns no space". A rolling restart deletes no
//     Node, so it reclaims nothing: a stop is not a leave.
//
// At start (New) one List of the Nodes fixes what must be known before the
// subsystems are built: that our Node exists, its InternalIP (the
// advertise address) and the number of Nodes (the IPAM bootstrap quorum,
// consensus=N, as Weave Net does).

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/weftmesh/weft/api/client"
	"github.com/weftmesh/weft/ipam"
	"github.com/weftmesh/weft/kube"
	"github.com/weftmesh/weft/peer"
	"github.com/weftmesh/weft/policy"
)

// kubeState is the Daemon's Kubernetes-mode state. nil outside
// Kubernetes mode.
type kubeState struct {
	client     *kube.Client
	node       string // our Node's name (= the peer's name)
	startNodes int    // Nodes in the API at start: the default bootstrap quorum
	consensus  bool   // the bootstrap quorum is startNodes (no --ipalloc-init)
	kick       chan struct{}

	mu         sync.Mutex // guards following
	targets    []string   // the other Nodes' InternalIPs, sorted
	netBusy    bool       // a patch is in flight
	reclaiming map[peer.ID]bool
	lastWarn   map[string]time.Time // rate limit of repeated warnings, by key
}

// kubeStartPoll is the pause between attempts to find our Node at start.
const kubeStartPoll = time.Second

// startKube builds the Kubernetes client and waits (up to
// Config.KubeStartTimeout) for the API server to list our Node with an
// address. It fills in what the rest of New needs: the advertise address,
// the Kubernetes targets and the bootstrap quorum.
func (d *Daemon) startKube() error {
	kc := kube.DefaultConfig()
	kc.Kubeconfig, kc.Logger, kc.UserAgent = d.cfg.Kubeconfig, d.cfg.Logger, "weft/"+Version
	kc.Policy = d.cfg.NetworkPolicy
	kc.Capabilities = policy.Capabilities{SCTP: kernelHasSCTP()}
	if d.cfg.Kube != nil {
		d.cfg.Kube(&kc)
	}
	c, err := kube.New(kc)
	if err != nil {
		return fmt.Errorf("kubernetes mode: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.KubeStartTimeout)
	defer cancel()
	var start kubeStart
	var last error // the reason of the last attempt that the deadline did not cut short
	for attempt := 0; ; attempt++ {
		nodes, err := c.ListNodes(ctx)
		if err == nil {
			start, err = kubeBootstrap(nodes, d.cfg.Name, d.cfg.Advertise == "")
		}
		if err == nil {
			break
		}
		if ctx.Err() == nil || last == nil {
			last = err
		}
		if attempt == 0 || attempt%10 == 0 {
			d.log.Info("kubernetes mode: waiting for this peer's Node", "node", d.cfg.Name, "err", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kubernetes mode: gave up after %v: %w", d.cfg.KubeStartTimeout, last)
		case <-time.After(kubeStartPoll):
		}
	}
	if d.cfg.Advertise == "" {
		d.cfg.Advertise = start.Self.InternalIP.String()
	}
	d.kube = &kubeState{client: c, node: d.cfg.Name, startNodes: start.Nodes, consensus: d.cfg.IPAllocInit == "",
		targets: start.Targets, kick: make(chan struct{}, 1), reclaiming: map[peer.ID]bool{}, lastWarn: map[string]time.Time{}}
	if d.cfg.IPAllocInit == "" {
		d.cfg.IPAllocInit = fmt.Sprintf("consensus=%d", start.Nodes)
	}
	d.log.Info("kubernetes mode", "node", d.cfg.Name, "advertise", d.cfg.Advertise, "nodes", start.Nodes,
		"targets", start.Targets, "ipalloc-init", d.cfg.IPAllocInit)
	if d.kube.consensus && start.Nodes > 1 {
		d.log.Info(fmt.Sprintf("IPAM: if no ring exists yet, the first division waits until %d of the %d Nodes run weft (consensus=%d)",
			start.Nodes/2+1, start.Nodes, start.Nodes))
	}
	return nil
}

// kubeTargetsNow returns the Kubernetes targets (nil outside Kubernetes
// mode).
func (d *Daemon) kubeTargetsNow() []string {
	if d.kube == nil {
		return nil
	}
	d.kube.mu.Lock()
	defer d.kube.mu.Unlock()
	return slices.Clone(d.kube.targets)
}

func (k *kubeState) poke() {
	select {
	case k.kick <- struct{}{}:
	default:
	}
}

// kubeLoop applies the Node list until ctx is done: on every change of
// the Nodes, at every sync pass (the sync loop pokes it) and every
// syncEvery. It returns after the reclaims and patches it started have
// ended.
func (d *Daemon) kubeLoop(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTicker(syncEvery)
	defer t.Stop()
	for {
		d.kubeSync(ctx, &wg)
		select {
		case <-ctx.Done():
			return nil
		case <-d.kube.client.Changed():
		case <-d.kube.kick:
		case <-t.C:
		}
	}
}

// kubeSync is one pass: targets, our Node's condition, reclaims.
func (d *Daemon) kubeSync(ctx context.Context, wg *sync.WaitGroup) {
	k := d.kube
	nodes, synced := k.client.Nodes()
	if !synced {
		return
	}
	d.setKubeTargets(kubeTargets(nodes, k.node, d.mesh.LocalAddr().Addr()))

	peers := d.withKnownOwners(d.mesh.Peers())
	st := d.alloc.Status()
	self, haveNode := findNode(nodes, k.node)
	up := networkUp(d.id.ID, peers[0].Meta.Joined, st, d.Ready(ctx).Ready)
	k.mu.Lock()
	patch := up && haveNode && !self.NetworkAvailable && !k.netBusy
	if patch {
		k.netBusy = true
	}
	k.mu.Unlock()
	if patch {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.setNetworkAvailable(ctx)
		}()
	}

	for _, g := range gonePeers(d.id.ID, k.node, nodes, peers, st.Owners, time.Since(d.started), time.Now()) {
		k.mu.Lock()
		busy := k.reclaiming[g.ID]
		k.reclaiming[g.ID] = true
		k.mu.Unlock()
		if busy {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.reclaimGone(ctx, g)
			k.mu.Lock()
			delete(k.reclaiming, g.ID)
			k.mu.Unlock()
		}()
	}
	d.warnKube(nodes, peers, st)
}

// setKubeTargets hands the mesh the new Kubernetes targets when they
// changed; the mesh joins new ones at its next reconnect.
func (d *Daemon) setKubeTargets(targets []string) {
	k := d.kube
	k.mu.Lock()
	old := k.targets
	same := slices.Equal(old, targets)
	k.targets = targets
	k.mu.Unlock()
	if same {
		return
	}
	d.log.Info("kubernetes: gossip targets follow the Nodes", "targets", targets, "before", old)
	d.mesh.SetTargets(d.joinTargets())
	d.poke() // a pass publishes Joined once one of them is reached
}

// setNetworkAvailable patches our Node's NetworkUnavailable=False,
// retrying for a while; the next pass retries what failed.
func (d *Daemon) setNetworkAvailable(ctx context.Context) {
	k := d.kube
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err := k.client.SetNetworkAvailable(pctx, k.node)
	cancel()
	k.mu.Lock()
	k.netBusy = false
	k.mu.Unlock()
	switch {
	case err == nil:
		d.log.Info("kubernetes: set this Node's NetworkUnavailable=False", "node", k.node, "reason", kube.NetworkReason)
	case ctx.Err() == nil:
		d.warnEvery("network", "kubernetes: set this Node's NetworkUnavailable=False; will retry", "node", k.node, "err", err)
	}
}

// reclaimGone takes over the space of a peer whose Node is gone and
// forgets it. Losing the race to another survivor is normal.
func (d *Daemon) reclaimGone(ctx context.Context, g gonePeer) {
	if g.Owned == 0 {
		d.mesh.Forget(g.Name)
		d.log.Info("kubernetes: forgot a peer without a Node", "peer", g.Name, "id", g.ID)
		return
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	n, err := d.reclaim(rctx, g.ID, g.Name)
	cancel()
	switch {
	case err == nil:
		d.log.Info("kubernetes: reclaimed the address space of a peer without a Node", "peer", g.Name, "id", g.ID, "addresses", n)
	case errors.Is(err, ipam.ErrNothingToReclaim), errors.Is(err, ipam.ErrReclaimedByOther):
		d.log.Debug("kubernetes: another peer reclaimed the space of a peer without a Node", "peer", g.Name, "id", g.ID, "err", err)
		d.mesh.Forget(g.Name)
	case errors.Is(err, ipam.ErrPeerAlive):
		d.log.Debug("kubernetes: a peer without a Node is alive to the ring; not reclaiming", "peer", g.Name, "err", err)
	case ctx.Err() != nil:
	default:
		d.warnEvery("reclaim "+g.ID.String(), "kubernetes: reclaim of a peer without a Node failed; will retry", "peer", g.Name, "id", g.ID, "err", err)
	}
}

// kubeStatus adds the Kubernetes view to st: the Nodes and their peers,
// each peer's Node, and the problems in words.
func (d *Daemon) kubeStatus(st *client.Status, peers []peer.Info) {
	k := d.kube
	nodes, synced := k.client.Nodes()
	ist := d.alloc.Status()
	ks, problems := kubeView(kubeInput{Self: k.node, Nodes: nodes, Synced: synced, Peers: peers, Owners: ist.Owners,
		Consensus: k.consensus, StartNodes: k.startNodes, IPAM: ist.Status, Up: time.Since(d.started), Now: time.Now()})
	st.Kubernetes = ks
	st.Problems = append(st.Problems, problems...)
	for i, p := range st.Peers {
		if _, ok := findNode(nodes, p.Name); ok {
			st.Peers[i].Node = p.Name
		}
	}
}

// kubeWarnEvery spaces out repeated warnings of one kind.
const kubeWarnEvery = time.Minute

// warnEvery logs msg at Warn at most once per kubeWarnEvery per key.
func (d *Daemon) warnEvery(key, msg string, args ...any) {
	k := d.kube
	k.mu.Lock()
	last, ok := k.lastWarn[key]
	now := time.Now()
	if ok && now.Sub(last) < kubeWarnEvery {
		k.mu.Unlock()
		return
	}
	k.lastWarn[key] = now
	k.mu.Unlock()
	d.log.Warn(msg, args...)
}

// warnKube logs what holds the mesh back, once a minute: the IPAM
// bootstrap waiting for Nodes that run no weft peer.
func (d *Daemon) warnKube(nodes []kube.Node, peers []peer.Info, st ipam.Status) {
	if st.Status == "ready" || time.Since(d.started) < nodeGrace {
		return
	}
	if msg := bootstrapProblem(d.kube.consensus, d.kube.startNodes, st.Status, nodesWithoutPeer(nodes, namedPeers(peers, st.Owners))); msg != "" {
		d.warnEvery("bootstrap", msg)
	}
}

func findNode(nodes []kube.Node, name string) (kube.Node, bool) {
	for _, n := range nodes {
		if n.Name == name {
			return n, true
		}
	}
	return kube.Node{}, false
}
