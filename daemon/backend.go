package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/weftmesh/weft/api"
	"github.com/weftmesh/weft/api/client"
	"github.com/weftmesh/weft/ipam"
	"github.com/weftmesh/weft/peer"
)

// The Daemon is the API's Backend: every method maps one request onto the
// subsystems and maps their errors onto the API's sentinels.

var _ api.Backend = (*Daemon)(nil)

// Ready reports whether pods can be served: the ring is ready and the
// bridge has its address.
func (d *Daemon) Ready(ctx context.Context) client.Ready {
	st := d.alloc.Status()
	if st.Status != "ready" {
		return client.Ready{Reason: "IPAM " + st.Status}
	}
	d.mu.Lock()
	br, routed := d.bridge, d.routed
	d.mu.Unlock()
	if !br.IsValid() {
		return client.Ready{Reason: "bridge has no address yet"}
	}
	if !routed.IsValid() {
		return client.Ready{Reason: "datapath not programmed yet"}
	}
	if st.Free == 0 && !d.anyFree(st) {
		return client.Ready{Reason: "no free addresses anywhere in " + st.Range.String()}
	}
	return client.Ready{Ready: true}
}

func (d *Daemon) anyFree(st ipam.Status) bool {
	for _, o := range st.Owners {
		if o.Free > 0 && o.Reachable {
			return true
		}
	}
	return false
}

// Allocate returns the address of req.ID, allocating one if needed. It
// waits (within ctx) for the ring and the bridge.
func (d *Daemon) Allocate(ctx context.Context, req client.AllocateRequest) (*client.Allocation, error) {
	if req.ID == "" || req.ID == ipam.BridgeID {
		return nil, fmt.Errorf("%w: allocation ID %q is reserved or empty", api.ErrBadRequest, req.ID)
	}
	if underlay, err := poolOf(req.Pool); err != nil {
		return nil, err
	} else if underlay {
		return d.allocateUnderlay(ctx, req)
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	t0 := time.Now()
	// The pod's name is stored with its allocation, in one transaction: the
	// name answers exactly as long as the allocation exists (sync.go).
	p, err := d.alloc.AllocateNamed(ctx, req.ID, req.Pod)
	if err != nil {
		return nil, mapIPAMError(err)
	}
	t1 := time.Now()
	d.nameAllocation(req, p.Addr())
	t2 := time.Now()
	// A pod that policies select is isolated from its first packet: its
	// program is in the kernel before weft-cni creates its veth.
	if err := d.waitPolicy(ctx, req.Pod); err != nil {
		return nil, err
	}
	t3 := time.Now()
	a := d.allocation(ctx, req.ID, p, true)
	t4 := time.Now()
	// Where an ADD's time goes, at debug level (a slow pod start is
	// rarely here: under a 30-pod burst every phase took milliseconds).
	d.log.Debug("allocated", "id", req.ID, "pod", req.Pod, "address", p, "ipam", t1.Sub(t0), "dns", t2.Sub(t1),
		"policy", t3.Sub(t2), "bridge", t4.Sub(t3), "total", t4.Sub(t0))
	return a, nil
}

// allocation fills in what a CNI plugin needs besides the address.
func (d *Daemon) allocation(ctx context.Context, id string, p netip.Prefix, wait bool) *client.Allocation {
	a := &client.Allocation{ID: id, Address: p.String(), Bridge: d.cfg.Bridge}
	br := d.waitBridge(ctx, wait)
	if br.IsValid() {
		a.Gateway = br.Addr().String()
		a.MTU = d.router.MTU()
		a.DNS = d.podDNS(br.Addr())
	}
	return a
}

// nameAllocation registers the pod name of an allocation (the name is
// also stored with the allocation, so it answers exactly as long as the
// allocation exists: sync.go).
func (d *Daemon) nameAllocation(req client.AllocateRequest, a netip.Addr) {
	if req.Pod == "" || d.dns == nil {
		return
	}
	if err := d.dns.Add(req.Pod, a, req.ID); err != nil {
		d.log.Warn("dns name of allocation", "id", req.ID, "name", req.Pod, "err", err)
	}
}

// podDNS is a pod's resolver configuration: this peer's DNS server at
// server (the bridge address), nil when the peer runs no DNS.
func (d *Daemon) podDNS(server netip.Addr) *client.PodDNS {
	if d.dns == nil {
		return nil
	}
	dom := strings.TrimSuffix(d.cfg.DNSDomain, ".")
	return &client.PodDNS{Nameservers: []string{server.String()}, Domain: dom, Search: []string{dom}}
}

func (d *Daemon) waitBridge(ctx context.Context, wait bool) netip.Prefix {
	for {
		d.mu.Lock()
		br := d.routed // the bridge device exists with this address
		d.mu.Unlock()
		if br.IsValid() || !wait {
			return br
		}
		select {
		case <-ctx.Done():
			return br
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func mapIPAMError(err error) error {
	switch {
	case errors.Is(err, ipam.ErrNoSpace):
		return fmt.Errorf("%w: %v", api.ErrUnavailable, err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return fmt.Errorf("%w: %v (is the ring still awaiting consensus? see 'weft status ipam')", api.ErrUnavailable, err)
	case errors.Is(err, ipam.ErrPeerAlive), errors.Is(err, ipam.ErrReclaimedByOther):
		return fmt.Errorf("%w: %v", api.ErrConflict, err)
	case errors.Is(err, ipam.ErrNoQuorum):
		return fmt.Errorf("%w: %v (a majority of the peers must be reachable to reclaim safely)", api.ErrUnavailable, err)
	case errors.Is(err, ipam.ErrNothingToReclaim):
		return fmt.Errorf("%w: %v", api.ErrNotFound, err)
	}
	return err
}

// Lookup returns an existing allocation.
func (d *Daemon) Lookup(ctx context.Context, id string) (*client.Allocation, error) {
	p, ok := d.alloc.Lookup(id)
	if !ok {
		if a, ok := d.lookupUnderlay(ctx, id); ok {
			return a, nil
		}
		return nil, fmt.Errorf("%w: no allocation for %q", api.ErrNotFound, id)
	}
	return d.allocation(ctx, id, p, false), nil
}

// Release frees id's address and its DNS records; idempotent.
func (d *Daemon) Release(ctx context.Context, id string) error {
	if id == ipam.BridgeID {
		return fmt.Errorf("%w: the bridge's address is released only by 'weft reset'", api.ErrBadRequest)
	}
	return d.release(id)
}

func (d *Daemon) release(id string) error {
	if err := errors.Join(d.alloc.Release(id), d.releaseUnderlay(id)); err != nil {
		return err
	}
	if d.policy != nil {
		d.policy.poke() // the address is no longer the pod's
	}
	if d.dns != nil {
		return d.dns.RemoveContainer(id)
	}
	return nil
}

// GC releases every allocation not in keep (the bridge's always stays).
func (d *Daemon) GC(ctx context.Context, keep []string) (*client.GCResult, error) {
	released, err := d.alloc.GC(keep)
	if err != nil {
		return nil, err
	}
	ureleased, err := d.gcUnderlay(keep)
	if err != nil {
		return nil, err
	}
	released = append(released, ureleased...)
	for _, id := range released {
		if d.dns != nil {
			_ = d.dns.RemoveContainer(id)
		}
	}
	if d.policy != nil && len(released) > 0 {
		d.policy.poke()
	}
	if released == nil {
		released = []string{}
	}
	return &client.GCResult{Released: released}, nil
}

func (d *Daemon) needDNS() error {
	if d.dns == nil {
		return fmt.Errorf("%w: DNS is off on this peer (--no-dns)", api.ErrUnavailable)
	}
	return nil
}

// DNSAdd registers name → address, owned by this peer.
func (d *Daemon) DNSAdd(ctx context.Context, req client.DNSRequest) error {
	if err := d.needDNS(); err != nil {
		return err
	}
	a, err := netip.ParseAddr(req.Address)
	if err != nil {
		return fmt.Errorf("%w: address %q: %v", api.ErrBadRequest, req.Address, err)
	}
	if err := d.dns.Add(req.Name, a, req.ContainerID); err != nil {
		return fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	}
	return nil
}

// DNSRemove removes this peer's records: by container, by name, or one
// name→address pair.
func (d *Daemon) DNSRemove(ctx context.Context, req client.DNSRequest) error {
	if err := d.needDNS(); err != nil {
		return err
	}
	if req.Name == "" && req.ContainerID != "" {
		return d.dns.RemoveContainer(req.ContainerID)
	}
	var a netip.Addr
	if req.Address != "" {
		var err error
		if a, err = netip.ParseAddr(req.Address); err != nil {
			return fmt.Errorf("%w: address %q: %v", api.ErrBadRequest, req.Address, err)
		}
	}
	if err := d.dns.Remove(req.Name, a); err != nil {
		return fmt.Errorf("%w: %v", api.ErrNotFound, err)
	}
	return nil
}

// DNSLookup answers from the replicated record set.
func (d *Daemon) DNSLookup(ctx context.Context, name string) (*client.DNSLookup, error) {
	if err := d.needDNS(); err != nil {
		return nil, err
	}
	out := &client.DNSLookup{Name: name, Addresses: []string{}}
	for _, a := range d.dns.Lookup(name) {
		out.Addresses = append(out.Addresses, a.String())
	}
	if len(out.Addresses) == 0 {
		return out, fmt.Errorf("%w: %s", api.ErrNotFound, name)
	}
	return out, nil
}

// Connect adds targets, persists them, and joins them now.
func (d *Daemon) Connect(ctx context.Context, peers []string) error {
	if len(peers) == 0 {
		return fmt.Errorf("%w: no peers given", api.ErrBadRequest)
	}
	d.mu.Lock()
	d.targets.Targets = mergeStrings(d.targets.Targets, peers)
	t := d.targets
	d.seenSaved, d.seenSavedAt = t.Seen, time.Now()
	d.mu.Unlock()
	if err := saveTargets(d.cfg.DataDir, t); err != nil {
		return err
	}
	d.mesh.SetTargets(d.joinTargets())
	if _, err := d.mesh.Join(peers); err != nil {
		return fmt.Errorf("%w: %v (the target is kept and retried)", api.ErrUnavailable, err)
	}
	return nil
}

// Forget removes targets and forgets departed peers of those names.
func (d *Daemon) Forget(ctx context.Context, peers []string) error {
	d.mu.Lock()
	var keep []string
	for _, t := range d.targets.Targets {
		if !contains(peers, t) {
			keep = append(keep, t)
		}
	}
	d.targets.Targets = keep
	t := d.targets
	d.seenSaved, d.seenSavedAt = t.Seen, time.Now()
	d.mu.Unlock()
	if err := saveTargets(d.cfg.DataDir, t); err != nil {
		return err
	}
	d.mesh.SetTargets(d.joinTargets())
	d.mesh.Forget(peers...)
	return nil
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// Rmpeer takes a dead peer's address space over.
func (d *Daemon) Rmpeer(ctx context.Context, name string) (*client.RmpeerResult, error) {
	var id peer.ID
	for _, p := range d.mesh.Peers() {
		if p.Name != name {
			continue
		}
		if p.ID == d.id.ID {
			return nil, fmt.Errorf("%w: %s is this peer; use 'weft reset' to hand its space over", api.ErrBadRequest, name)
		}
		if p.State.Up() {
			return nil, fmt.Errorf("%w: peer %s is %s: stop it first (rmpeer is for dead peers)", api.ErrConflict, name, p.State)
		}
		id = p.ID
	}
	if id == 0 {
		for _, o := range d.alloc.Status().Owners {
			if o.Name == name || o.ID.String() == name {
				id = o.ID
			}
		}
	}
	if id == 0 {
		return nil, fmt.Errorf("%w: no peer named %s owns space in the ring", api.ErrNotFound, name)
	}
	n, err := d.reclaim(ctx, id, name)
	if err != nil {
		return nil, mapIPAMError(err)
	}
	return &client.RmpeerResult{Name: name, Reclaimed: n}, nil
}

// reclaim takes the space of dead peer id (named name) over through the
// ring's safe reclaim (a majority agrees, exactly one peer wins, refused
// while the peer is alive to this peer or to any acceptor), then forgets
// the peer. It is the one path of `weft rmpeer` and of the reclaim of a
// deleted Node's peer (kube.go).
func (d *Daemon) reclaim(ctx context.Context, id peer.ID, name string) (int64, error) {
	n, err := d.alloc.Reclaim(ctx, id)
	if errors.Is(err, ipam.ErrNothingToReclaim) && d.under != nil {
		n, err = 0, nil // it may own underlay space only
	}
	if err != nil {
		return 0, err
	}
	un, err := d.reclaimUnderlay(ctx, id)
	if err != nil {
		return n, fmt.Errorf("underlay pool: %w", err)
	}
	n += un
	d.mesh.Forget(name)
	d.poke()
	return n, nil
}

// Counters are the subsystems' monotonic counters for /metrics.
func (d *Daemon) Counters() map[string]float64 {
	d.mu.Lock()
	c := map[string]float64{
		"reconcile_runs_total":        float64(d.reconciles),
		"reconcile_errors_total":      float64(d.recErrors),
		"sync_skipped_total":          float64(d.syncSkipped),
		"relay_reports_applied_total": float64(d.reportsApplied),
		"relay_switch_passes_total":   float64(d.switchPasses),
	}
	pr := d.prober
	d.mu.Unlock()
	if pr != nil {
		hellos, requests := pr.Sent()
		c["probe_hellos_sent_total"] = float64(hellos)
		c["probe_requests_sent_total"] = float64(requests)
		packets, reads := pr.Received()
		c["probe_received_total"] = float64(packets)
		c["probe_reads_total"] = float64(reads)
	}
	c["reconcile_skipped_total"] = float64(d.router.Skipped()) // passes that changed nothing
	c["ipam_syncs_total"] = float64(d.alloc.Syncs())           // store commits synced to disk
	c["gossip_bad_frames_total"] = float64(d.mesh.BadFrames())
	c["gossip_member_syncs_total"] = float64(d.mesh.MemberSyncs()) // membership push-pulls anti-entropy started
	c["gossip_repairs_total"] = float64(d.mesh.Repairs())          // channel states anti-entropy found different
	c["gossip_dropped_total"] = float64(d.ipamCh.Dropped())
	c["gossip_rejected_total"] = float64(d.ipamCh.Rejected())
	d.underlayCounters(c)
	if d.dns != nil {
		s := d.dns.Stats()
		c["gossip_dropped_total"] += float64(d.dnsCh.Dropped())
		c["gossip_rejected_total"] += float64(d.dnsCh.Rejected())
		c["dns_queries_total"] = float64(s.Queries)
		c["dns_local_total"] = float64(s.Local)
		c["dns_forwarded_total"] = float64(s.Forwarded)
		c["dns_nxdomain_total"] = float64(s.NXDomain)
		c["dns_servfail_total"] = float64(s.ServFail)
		c["dns_errors_total"] = float64(s.Errors)
	}
	return c
}

// Leave hands this peer's address space to a live peer, then stops the
// peer: the first half of `weft reset` while the peer runs.
func (d *Daemon) Leave(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := d.handoffUnderlay(ctx); err != nil {
		return fmt.Errorf("%w: hand over the underlay space: %v", api.ErrUnavailable, err)
	}
	if err := d.alloc.Handoff(ctx); err != nil {
		return fmt.Errorf("%w: hand over the address space: %v", api.ErrUnavailable, err)
	}
	d.log.Info("address space handed over; leaving the mesh")
	d.mesh.Leaving()
	d.mu.Lock()
	stop := d.stop
	d.mu.Unlock()
	if stop != nil {
		go func() { time.Sleep(200 * time.Millisecond); stop(errLeft) }() // let the answer go out first
	}
	return nil
}
