package daemon

// NetworkPolicy enforcement (Kubernetes mode). The pipeline, one pass at
// a time in policyLoop:
//
//	kube informers (pods, namespaces, policies) + this peer's allocations
//	  → buildSnapshot (policysnap.go) → policy.NewModel → Compile for this node
//	  → nft.Applier.Apply: one transaction, only the difference
//	  → conntrack: delete the entries of flows the new model denies
//
// A pass runs on every informer change, coalesced over policyDebounce (25 ms) so
// that a burst (a Deployment's pods, kubectl apply of many policies)
// costs one apply; at once when CNI ADD waits for a new pod (Allocate);
// after a failure, every policyRetry; and every policyResync after the
// applier forgot what it applied, so that the next apply reads the
// kernel and repairs drift.
//
// Enforcement does not depend on this process: the table stays in the
// kernel while the peer is stopped or restarting. A restarted peer
// applies nothing until the informers have synced (an empty cache is not
// an empty cluster), and then the applier reads the table the last run
// left and changes only the difference in one transaction: the old
// program holds until the new one replaces it, with no flush between.
//
// A new pod is isolated from its first packet: Allocate (CNI ADD) waits
// until a program that knows the pod's labels (the Pod object exists
// before its sandbox) and its address (the allocation) is in the kernel,
// before weft-cni even creates the pod's veth. If that takes longer than
// policyAddWait, ADD fails with the reason and the kubelet retries: a pod
// never runs unprogrammed.
//
// After a change that altered the program, the conntrack entries of this
// node's pods whose flows the new model denies are deleted, so their next
// packet is judged again (connections cut within a pass, not left
// running on an old verdict).

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/weftmesh/weft/api"
	"github.com/weftmesh/weft/api/client"
	"github.com/weftmesh/weft/ipam"
	"github.com/weftmesh/weft/kube"
	"github.com/weftmesh/weft/policy"
)

const (
	policyDebounce = 25 * time.Millisecond // informer events coalesced into one pass
	policyRetry    = time.Second           // pause after a failed pass
	policyResync   = time.Minute           // re-read the kernel's table and repair drift
	policyAddWait  = 20 * time.Second      // longest wait of CNI ADD for a new pod's program
	// policySyncGrace: how long after start status keeps quiet about
	// informers that have not synced.
	policySyncGrace = 30 * time.Second
)

// programApplier brings the kernel's table to a program
// (policy/nft.Applier). Apply returns the operations it ran (none when
// nothing differed); Forget makes the next Apply read the kernel.
type programApplier interface {
	Apply(p *policy.Program) ([]string, error)
	Forget(table string)
}

// flow is one conntrack entry as policy judges it: the client's address,
// the real server's (after a Service's DNAT: the reply's source), the
// server's port and the protocol.
type flow struct {
	Src, Dst netip.Addr
	Port     uint16
	Proto    policy.Protocol
}

// flowCutter deletes conntrack entries (conntrack_linux.go). Cut walks the
// IPv4 table once and deletes every entry for which deny is true; it
// returns how many it deleted. deny runs on the caller's goroutine.
type flowCutter interface {
	Cut(deny func(flow) bool) (uint, error)
}

// policyState is the Daemon's NetworkPolicy state; nil when the peer does
// not enforce NetworkPolicy.
type policyState struct {
	client  *kube.Client
	node    string
	compile policy.Config
	applier programApplier
	cutter  flowCutter // nil: no conntrack cuts
	drops   *dropLog
	kick    chan struct{} // a pass now (cap 1)
	started time.Time
	log     *slog.Logger
	// What the rest of the peer knows (the Daemon's methods; tests fake
	// them): this peer's allocations, nodes' host addresses besides
	// their InternalIP, and this host's own addresses.
	allocs    func() []ipam.Allocation
	nodeAddrs func() map[string][]netip.Addr
	hostAddrs func() map[netip.Addr]bool

	mu        sync.Mutex // guards following
	model     *policy.Model
	info      snapshotInfo
	refused   []error
	local     []client.PolicyPod // this node's pods with an address, and what isolates them
	version   uint64             // the informers' version of the last applied view
	gen       uint64             // bumped by every attachment that waits (Allocate)
	applied   uint64             // gen of the last applied pass
	appliedAt time.Time
	took      time.Duration
	changes   int
	err       error // of the last pass; nil after a success
	cut       uint64
	waiters   map[*podWait]bool
	logged    map[string]bool // the problems of the last pass, each logged once when it appeared
}

// podWait is an Allocate waiting for its pod's program.
type podWait struct {
	namespace, name string
	gen             uint64
	done            chan struct{} // closed once programmed
}

func newPolicyState(c *kube.Client, node string, applier programApplier, cutter flowCutter, log *slog.Logger) *policyState {
	return &policyState{client: c, node: node, compile: policy.DefaultConfig(), applier: applier, cutter: cutter,
		drops: newDropLog(dropLogSize), kick: make(chan struct{}, 1), started: time.Now(), log: log,
		allocs:    func() []ipam.Allocation { return nil },
		nodeAddrs: func() map[string][]netip.Addr { return nil },
		hostAddrs: func() map[netip.Addr]bool { return nil },
		waiters:   map[*podWait]bool{}, logged: map[string]bool{}}
}

// newPolicy builds the Daemon's policy state over applier and cutter.
func (d *Daemon) newPolicy(applier programApplier, cutter flowCutter) *policyState {
	ps := newPolicyState(d.kube.client, d.kube.node, applier, cutter, d.log)
	ps.allocs, ps.nodeAddrs, ps.hostAddrs = d.alloc.Allocations, d.nodeAddrs, d.hostAddrs
	return ps
}

func (ps *policyState) poke() {
	select {
	case ps.kick <- struct{}{}:
	default:
	}
}

// policyLoop runs passes until ctx is done.
func (d *Daemon) policyLoop(ctx context.Context) error { return d.policy.run(ctx) }

// run runs passes until ctx is done.
func (ps *policyState) run(ctx context.Context) error {
	resync := time.NewTicker(policyResync)
	defer resync.Stop()
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ps.client.PolicyChanged():
			t := time.NewTimer(policyDebounce)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			case <-ps.kick: // a pod waits: now
				t.Stop()
			}
		case <-ps.kick:
		case <-resync.C:
			ps.applier.Forget(ps.compile.Table)
		case <-retry:
		}
		retry = nil
		if err := ps.pass(); err != nil {
			retry = time.After(policyRetry)
		}
	}
}

// pass builds, compiles and applies the program once.
func (ps *policyState) pass() error {
	view, synced := ps.client.PolicyView()
	if !synced {
		return nil // nothing known yet: the kernel keeps what the last run left
	}
	ps.mu.Lock()
	gen := ps.gen
	ps.mu.Unlock()
	start := time.Now()
	nodes, _ := ps.client.Nodes()
	snap, info := buildSnapshot(snapshotInput{View: view, Self: ps.node, Nodes: nodes,
		NodeAddrs: ps.nodeAddrs(), Allocs: ps.allocs()})
	m := policy.NewModel(snap)
	prog, err := ps.compile.Compile(m, ps.node)
	var ops []string
	if err == nil {
		ops, err = ps.applier.Apply(prog)
	}
	took := time.Since(start)
	if err != nil {
		ps.mu.Lock()
		first := ps.err == nil
		ps.err = err
		ps.mu.Unlock()
		if first {
			ps.log.Warn("network policy: apply failed; retrying", "err", err)
		}
		return err
	}
	local := localPolicyPods(m, ps.node)
	ps.mu.Lock()
	recovered := ps.err != nil
	ps.model, ps.info, ps.refused, ps.local = m, info, view.Refused, local
	ps.version, ps.applied, ps.appliedAt, ps.took, ps.changes, ps.err = view.Version, gen, time.Now(), took, len(ops), nil
	served := 0
	for w := range ps.waiters {
		if w.gen <= gen && viewHas(view, w.namespace, w.name) {
			close(w.done)
			delete(ps.waiters, w)
			served++
		}
	}
	left := len(ps.waiters)
	newProblems := ps.newProblemsLocked()
	ps.mu.Unlock()
	// served: the CNI ADDs this pass released; waiting: those that need
	// the next one (their pod is not in the informer yet, or they came
	// after this pass began).
	ps.log.Debug("network policy pass", "took", took, "changes", len(ops), "served", served, "waiting", left,
		"policies", len(view.Policies), "pods", len(snap.Pods), "version", view.Version)
	if recovered {
		ps.log.Info("network policy: applied again")
	}
	for _, p := range newProblems {
		ps.log.Warn(p)
	}
	if len(ops) > 0 {
		ps.cutDenied(m)
	}
	return nil
}

// cutDenied deletes the conntrack entries of this node's pods whose flows
// m denies.
func (ps *policyState) cutDenied(m *policy.Model) {
	if ps.cutter == nil {
		return
	}
	self := ps.hostAddrs()
	n, err := ps.cutter.Cut(func(f flow) bool { return denies(m, ps.node, self, f) })
	if err != nil {
		ps.log.Warn("network policy: delete conntrack entries of denied flows", "err", err)
	}
	if n > 0 {
		ps.mu.Lock()
		ps.cut += uint64(n)
		ps.mu.Unlock()
		ps.log.Info("network policy: cut connections that a change denies", "conntrack entries", n)
	}
}

// denies reports whether m denies flow f, a flow of a pod of node (else
// false: other nodes cut their own). Flows from the host's own addresses
// are never judged (the kernel does not either).
func denies(m *policy.Model, node string, host map[netip.Addr]bool, f flow) bool {
	if host[f.Src] {
		return false
	}
	src, dst := m.Endpoint(f.Src), m.Endpoint(f.Dst)
	if (src.Pod == nil || src.Pod.Node != node) && (dst.Pod == nil || dst.Pod.Node != node) {
		return false
	}
	return !policy.Evaluate(m, src, dst, f.Port, f.Proto).Allowed()
}

func viewHas(v kube.PolicyView, namespace, name string) bool {
	i := sort.Search(len(v.Pods), func(i int) bool {
		p := v.Pods[i]
		return p.Namespace > namespace || (p.Namespace == namespace && p.Name >= name)
	})
	return i < len(v.Pods) && v.Pods[i].Namespace == namespace && v.Pods[i].Name == name
}

// localPolicyPods lists node's pods with an address and the policies
// that isolate each.
func localPolicyPods(m *policy.Model, node string) []client.PolicyPod {
	names := func(nps []*policy.NetworkPolicy) []string {
		out := make([]string, len(nps))
		for i, np := range nps {
			out[i] = np.String()
		}
		return out
	}
	var out []client.PolicyPod
	for _, p := range m.Pods() {
		if p.Node != node || !p.IP.IsValid() {
			continue
		}
		out = append(out, client.PolicyPod{Pod: p.Namespace + "/" + p.Name, Address: p.IP.String(),
			Ingress: names(m.Selecting(p, policy.Ingress)), Egress: names(m.Selecting(p, policy.Egress))})
	}
	return out
}

// nodeAddrs are the nodes' host addresses that the Node objects do not
// list: every peer's bridge address, and this node's underlay and
// node-local DNS addresses.
func (d *Daemon) nodeAddrs() map[string][]netip.Addr {
	out := map[string][]netip.Addr{}
	for _, p := range d.mesh.Peers() {
		if p.Meta.Bridge.IsValid() {
			out[p.Name] = append(out[p.Name], p.Meta.Bridge)
		}
	}
	self := d.id.Name
	if a := d.mesh.LocalAddr().Addr(); a.IsValid() && !a.IsUnspecified() {
		out[self] = append(out[self], a)
	}
	if d.cfg.DNSLocalAddress.IsValid() {
		out[self] = append(out[self], d.cfg.DNSLocalAddress)
	}
	return out
}

// hostAddrs are this node's own addresses as policy knows them.
func (d *Daemon) hostAddrs() map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	for _, a := range d.nodeAddrs()[d.id.Name] {
		out[a] = true
	}
	if d.kube != nil {
		if nodes, ok := d.kube.client.Nodes(); ok {
			if n, ok := findNode(nodes, d.kube.node); ok && n.InternalIP.IsValid() {
				out[n.InternalIP] = true
			}
		}
	}
	return out
}

// waitPolicy blocks until the pod named pod ("NAME.NAMESPACE", as
// weft-cni names it) is programmed, or fails after policyAddWait. It
// returns at once when the peer does not enforce NetworkPolicy or the
// attachment names no pod.
func (d *Daemon) waitPolicy(ctx context.Context, pod string) error {
	if d.policy == nil {
		return nil
	}
	return d.policy.wait(ctx, pod, policyAddWait)
}

// wait is waitPolicy, giving up after limit.
func (ps *policyState) wait(ctx context.Context, pod string, limit time.Duration) error {
	ns, name, ok := splitPodName(pod)
	if !ok {
		return nil
	}
	w := &podWait{namespace: ns, name: name, done: make(chan struct{})}
	ps.mu.Lock()
	ps.gen++
	w.gen = ps.gen
	ps.waiters[w] = true
	ps.mu.Unlock()
	ps.poke()
	t := time.NewTimer(limit)
	defer t.Stop()
	var why error
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		why = ctx.Err()
	case <-t.C:
		why = fmt.Errorf("not within %v", limit)
	}
	ps.mu.Lock()
	delete(ps.waiters, w)
	reason := ps.waitReasonLocked(ns, name)
	ps.mu.Unlock()
	return fmt.Errorf("%w: network policy for pod %s/%s is not programmed (%v): %s; the kubelet retries", api.ErrUnavailable, ns, name, why, reason)
}

// waitReasonLocked says why pod ns/name is not programmed yet.
func (ps *policyState) waitReasonLocked(ns, name string) string {
	if _, synced := ps.client.PolicyVersion(); !synced {
		return "the pod, namespace and networkpolicy informers have not synced with the API server yet"
	}
	if ps.err != nil {
		return "applying the nftables program fails: " + ps.err.Error()
	}
	if view, ok := ps.client.PolicyView(); ok && !viewHas(view, ns, name) {
		return "the Pod object is not in this peer's informer (is the API server reachable? does the pod still exist?)"
	}
	return "the program was not applied in time"
}

// newProblemsLocked returns the problems not logged before, and forgets
// those that went away (one that comes back is logged again).
func (ps *policyState) newProblemsLocked() []string {
	var out []string
	now := map[string]bool{}
	for _, p := range ps.problemsLocked() {
		now[p] = true
		if !ps.logged[p] {
			out = append(out, p)
		}
	}
	ps.logged = now
	return out
}

// problemsLocked lists, in words, what the policies ask that weft cannot
// do, and what keeps the kernel from reflecting them.
func (ps *policyState) problemsLocked() []string {
	var out []string
	if _, synced := ps.client.PolicyVersion(); !synced && time.Since(ps.started) > policySyncGrace {
		out = append(out, "network policy: the pod, namespace and networkpolicy informers have not synced: new pods wait in CNI ADD (is the API server reachable, and may weft's ClusterRole list pods, namespaces and networkpolicies?)")
	}
	if ps.err != nil {
		out = append(out, "network policy: applying the nftables program fails (the kernel keeps the last program; retrying every second): "+ps.err.Error())
	}
	for _, e := range ps.refused {
		out = append(out, e.Error()+": the policy is left out entirely (it cannot say which pods it isolates)")
	}
	if ps.model != nil {
		for _, e := range ps.model.Problems() {
			out = append(out, e.Error())
		}
	}
	return out
}

// policyStatus is the "policy" object of the status.
func (d *Daemon) policyStatus() (client.PolicyStatus, []string) {
	ps := d.policy
	if ps == nil {
		return client.PolicyStatus{}, nil
	}
	version, synced := ps.client.PolicyVersion()
	ps.mu.Lock()
	defer ps.mu.Unlock()
	st := client.PolicyStatus{Enabled: true}
	if ps.model != nil {
		st.Synced = synced && ps.err == nil && ps.version == version && ps.applied == ps.gen
		st.Policies = len(ps.model.Policies()) + len(ps.refused)
		st.Pods = ps.info.Pods
		isolated := map[string]bool{} // a pod with two addresses (a new sandbox) counts once
		for _, p := range ps.local {
			if len(p.Ingress) > 0 || len(p.Egress) > 0 {
				isolated[p.Pod] = true
			}
		}
		st.Isolated = len(isolated)
	}
	return st, ps.problemsLocked()
}

// errNoPolicy answers the policy routes on a peer that does not enforce
// NetworkPolicy.
var errNoPolicy = fmt.Errorf("%w: this peer does not enforce NetworkPolicy: it runs outside Kubernetes mode or with --network-policy=false", api.ErrUnavailable)

// PolicyReport is the state of enforcement on this node.
func (d *Daemon) PolicyReport(ctx context.Context) (*client.PolicyReport, error) {
	ps := d.policy
	if ps == nil {
		return nil, errNoPolicy
	}
	st, problems := d.policyStatus()
	ps.mu.Lock()
	defer ps.mu.Unlock()
	r := &client.PolicyReport{Status: st, Node: ps.node, Problems: problems, Changes: ps.changes,
		ApplyMillis: float64(ps.took) / float64(time.Millisecond), CutFlows: ps.cut, Drops: ps.drops.Total(),
		Pods: slices.Clone(ps.local)}
	if !ps.appliedAt.IsZero() {
		r.AppliedAt = ps.appliedAt.UTC().Format(time.RFC3339)
	}
	if ps.err != nil {
		r.Error = ps.err.Error()
	}
	return r, nil
}

// PolicyDrops returns the last dropped packets, newest first.
func (d *Daemon) PolicyDrops(ctx context.Context) ([]client.PolicyDrop, error) {
	if d.policy == nil {
		return nil, errNoPolicy
	}
	return d.policy.drops.List(), nil
}

// PolicyDropCounts returns the drops per local pod and direction.
func (d *Daemon) PolicyDropCounts() []client.PolicyDropCount {
	if d.policy == nil {
		return nil
	}
	return d.policy.drops.Counts()
}

// currentModel returns the model of the last applied pass.
func (ps *policyState) currentModel() (*policy.Model, error) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.model == nil {
		return nil, fmt.Errorf("%w: no network policy model yet (the informers have not synced)", api.ErrUnavailable)
	}
	return ps.model, nil
}

// PolicyExplain judges a connection with the current model.
func (d *Daemon) PolicyExplain(ctx context.Context, req client.ExplainRequest) (*client.Explanation, error) {
	if d.policy == nil {
		return nil, errNoPolicy
	}
	m, err := d.policy.currentModel()
	if err != nil {
		return nil, err
	}
	return explain(m, req)
}
