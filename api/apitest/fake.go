// Package apitest holds a fake api.Backend with a realistic three-peer mesh
// and a browser check of the status page, for tests of api and of the
// daemon.
//
//	f := apitest.NewFake()
//	srv, _ := api.New(cfg, api.All(f))
//	go srv.Run(ctx)
//	apitest.CheckPage(t, "http://"+srv.HTTPAddr().String()+"/", 3, outDir)
package apitest

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/weftmesh/weft/api"
	"github.com/weftmesh/weft/api/client"
)

var _ api.Backend = (*Fake)(nil)

// Fake is an in-memory Backend: peer h1 (this one, 10.32.0.0/12 shared
// with h2 and h3, h3 dead and owning 10.40.0.0/14), with real allocation,
// DNS and rmpeer behaviour over that state. Safe for concurrent use.
type Fake struct {
	start time.Time

	mu       sync.Mutex // guards following
	peers    []client.Peer
	ranges   []client.IPAMRange
	allocs   map[string]client.Allocation // by ID
	pods     map[string]client.Pod        // by ID
	records  []client.DNSEntry
	targets  []string
	errs     map[string]error // by method name, returned instead of working
	notReady string
	counters map[string]float64
}

// Identities of the fake mesh.
const (
	SelfName = "h1"
	SelfID   = "8f3a9c2e11d0b7a4"
	H2ID     = "1c0ffee000000002"
	H3ID     = "d00dfeed00000003"
	Domain   = "weft.local."
	Range    = "10.32.0.0/12"
)

// NewFake returns a Fake with the three-peer mesh, two local pods and
// three DNS records.
func NewFake() *Fake {
	now := time.Now().UTC()
	ago := func(d time.Duration) string { return now.Add(-d).Format(time.RFC3339) }
	f := &Fake{
		start: now.Add(-3*time.Hour - 25*time.Minute),
		peers: []client.Peer{
			{Name: "h1", ID: SelfID, Address: "192.168.50.1", State: "alive", Self: true, Transport: "wireguard",
				Endpoint: "192.168.50.1:51820", Bridge: "10.32.0.1", LastSeen: ago(0)},
			{Name: "h2", ID: H2ID, Address: "192.168.50.2", State: "alive", Transport: "wireguard",
				Endpoint: "192.168.50.2:51820", Bridge: "10.36.0.1", LastSeen: ago(time.Second),
				LastHandshake: ago(42 * time.Second), RxBytes: 18_734_112, TxBytes: 9_210_554},
			{Name: "h3", ID: H3ID, Address: "192.168.50.3", State: "dead", Transport: "wireguard",
				Endpoint: "192.168.50.3:51820", Bridge: "10.40.0.1", LastSeen: ago(7 * time.Minute),
				LastHandshake: ago(9 * time.Minute), RxBytes: 1_204_331, TxBytes: 2_990_001,
				Reason: "no gossip for 7m0s (failure detector: dead); no WireGuard handshake for 9m0s"},
		},
		ranges: []client.IPAMRange{
			{Start: "10.32.0.0", End: "10.35.255.255", Size: 1 << 18, Owner: SelfID, OwnerName: "h1", Reachable: true},
			{Start: "10.36.0.0", End: "10.39.255.255", Size: 1 << 18, Owner: H2ID, OwnerName: "h2", Free: 1<<18 - 7, Reachable: true},
			{Start: "10.40.0.0", End: "10.43.255.255", Size: 1 << 18, Owner: H3ID, OwnerName: "h3", Free: 1<<18 - 4, Reachable: false},
			{Start: "10.44.0.0", End: "10.47.255.255", Size: 1 << 18, Owner: SelfID, OwnerName: "h1", Reachable: true},
		},
		allocs:   map[string]client.Allocation{},
		pods:     map[string]client.Pod{},
		errs:     map[string]error{},
		targets:  []string{"192.168.50.2"},
		counters: map[string]float64{"dns_queries_total": 1532, "reconcile_runs_total": 211, "reconcile_errors_total": 1},
	}
	f.records = []client.DNSEntry{
		{Name: "db.default.weft.local.", Address: "10.36.0.4", Owner: H2ID, OwnerName: "h2", ContainerID: "c0ffee42d00d"},
	}
	ctx := context.Background()
	f.Allocate(ctx, client.AllocateRequest{ID: "weft:bridge"})
	for _, p := range []struct{ id, pod, name string }{
		{"4b1d2c3e5f60718293a4b5c6d7e8f901", "web-0.default", "web"},
		{"9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b", "api-7d9f.shop", "api"},
	} {
		a, _ := f.Allocate(ctx, client.AllocateRequest{ID: p.id, IfName: "eth0", Pod: p.pod})
		addr := strings.SplitN(a.Address, "/", 2)[0]
		f.DNSAdd(ctx, client.DNSRequest{Name: p.pod, Address: addr, ContainerID: p.id})
		f.DNSAdd(ctx, client.DNSRequest{Name: p.name, Address: addr, ContainerID: p.id})
	}
	return f
}

// SetError makes the named Backend method (e.g. "Allocate") return err
// until it is set back to nil.
func (f *Fake) SetError(method string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.errs, method)
	} else {
		f.errs[method] = err
	}
}

// SetNotReady makes Ready report reason ("" = ready).
func (f *Fake) SetNotReady(reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.notReady = reason
}

// Targets returns the peers Connect added and Forget did not remove.
func (f *Fake) Targets() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.targets)
}

func (f *Fake) errLocked(method string) error { return f.errs[method] }

// Status implements api.Backend.
func (f *Fake) Status(ctx context.Context) (*client.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.errLocked("Status"); err != nil {
		return nil, err
	}
	st := &client.Status{
		Name: SelfName, ID: SelfID, Version: "0.1.0-test", Transport: "wireguard", Encrypted: true,
		UptimeSeconds: time.Since(f.start).Seconds(),
		Peers:         slices.Clone(f.peers),
		DNS:           client.DNSStatus{Domain: Domain, Listen: []string{"10.32.0.1:53"}, Entries: slices.Clone(f.records)},
	}
	st.IPAM = f.ipamLocked()
	for _, id := range slices.Sorted(maps.Keys(f.pods)) {
		st.Pods = append(st.Pods, f.pods[id])
	}
	for _, p := range f.peers {
		if p.State != "alive" && !p.Self {
			st.Problems = append(st.Problems, fmt.Sprintf("peer %s is %s: %s", p.Name, p.State, p.Reason))
		}
	}
	return st, nil
}

func (f *Fake) ipamLocked() client.IPAMStatus {
	s := client.IPAMStatus{Range: Range, Status: "ready", Allocated: int64(len(f.allocs))}
	owners := map[string]*client.IPAMOwner{}
	var order []string
	var total int64
	for i, r := range f.ranges {
		if r.Owner == SelfID {
			r.Free = r.Size
			if i == 0 {
				r.Free -= int64(len(f.allocs))
			}
			f.ranges[i] = r
			s.Owned += r.Size
			s.Free += r.Free
		}
		total += r.Size
		o := owners[r.Owner]
		if o == nil {
			o = &client.IPAMOwner{Name: r.OwnerName, ID: r.Owner, Reachable: r.Reachable}
			owners[r.Owner] = o
			order = append(order, r.Owner)
		}
		o.Owned += r.Size
		o.Free += r.Free
	}
	for _, id := range order {
		o := owners[id]
		o.Share = float64(o.Owned) / float64(total)
		s.Owners = append(s.Owners, *o)
	}
	s.Ranges = slices.Clone(f.ranges)
	return s
}

// Ready implements api.Backend.
func (f *Fake) Ready(ctx context.Context) client.Ready {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.notReady != "" {
		return client.Ready{Ready: false, Reason: f.notReady}
	}
	return client.Ready{Ready: true}
}

// Allocate implements api.Backend: addresses from 10.32.0.1 up, the same
// ID always getting the same address.
func (f *Fake) Allocate(ctx context.Context, req client.AllocateRequest) (*client.Allocation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.errLocked("Allocate"); err != nil {
		return nil, err
	}
	if a, ok := f.allocs[req.ID]; ok {
		return &a, nil
	}
	used := map[string]bool{}
	for _, a := range f.allocs {
		used[a.Address] = true
	}
	ip := netip.MustParseAddr("10.32.0.1")
	for ; used[ip.String()+"/12"]; ip = ip.Next() {
	}
	a := client.Allocation{
		ID: req.ID, Address: ip.String() + "/12", Gateway: "10.32.0.1", Bridge: "weft", MTU: 1360,
		DNS: &client.PodDNS{Nameservers: []string{"10.32.0.1"}, Domain: "weft.local", Search: []string{"weft.local"}},
	}
	f.allocs[req.ID] = a
	if req.Pod != "" || req.IfName != "" {
		f.pods[req.ID] = client.Pod{ContainerID: req.ID, IfName: req.IfName, Name: req.Pod, Address: a.Address}
	}
	return &a, nil
}

// Lookup implements api.Backend.
func (f *Fake) Lookup(ctx context.Context, id string) (*client.Allocation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.errLocked("Lookup"); err != nil {
		return nil, err
	}
	a, ok := f.allocs[id]
	if !ok {
		return nil, fmt.Errorf("lookup %q: %w: no allocation with that ID on this peer", id, api.ErrNotFound)
	}
	return &a, nil
}

// Release implements api.Backend; idempotent.
func (f *Fake) Release(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.errLocked("Release"); err != nil {
		return err
	}
	f.releaseLocked(id)
	return nil
}

func (f *Fake) releaseLocked(id string) {
	delete(f.allocs, id)
	delete(f.pods, id)
	f.records = slices.DeleteFunc(f.records, func(e client.DNSEntry) bool { return e.ContainerID == id && e.Owner == SelfID })
}

// GC implements api.Backend.
func (f *Fake) GC(ctx context.Context, keep []string) (*client.GCResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.errLocked("GC"); err != nil {
		return nil, err
	}
	res := &client.GCResult{Released: []string{}}
	for _, id := range slices.Sorted(maps.Keys(f.allocs)) {
		if id != "weft:bridge" && !slices.Contains(keep, id) {
			f.releaseLocked(id)
			res.Released = append(res.Released, id)
		}
	}
	return res, nil
}

func fqdn(name string) string {
	name = strings.TrimSuffix(name, ".")
	if !strings.HasSuffix(name, "."+strings.TrimSuffix(Domain, ".")) {
		name += "." + strings.TrimSuffix(Domain, ".")
	}
	return name + "."
}

// DNSAdd implements api.Backend.
func (f *Fake) DNSAdd(ctx context.Context, req client.DNSRequest) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.errLocked("DNSAdd"); err != nil {
		return err
	}
	if _, err := netip.ParseAddr(req.Address); err != nil {
		return fmt.Errorf("dns add %s: %w: address %q is not an IP address", req.Name, api.ErrBadRequest, req.Address)
	}
	e := client.DNSEntry{Name: fqdn(req.Name), Address: req.Address, Owner: SelfID, OwnerName: SelfName, ContainerID: req.ContainerID}
	if !slices.Contains(f.records, e) {
		f.records = append(f.records, e)
	}
	return nil
}

// DNSRemove implements api.Backend.
func (f *Fake) DNSRemove(ctx context.Context, req client.DNSRequest) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.errLocked("DNSRemove"); err != nil {
		return err
	}
	f.records = slices.DeleteFunc(f.records, func(e client.DNSEntry) bool {
		if e.Owner != SelfID {
			return false
		}
		if req.Name != "" && e.Name != fqdn(req.Name) {
			return false
		}
		if req.Address != "" && e.Address != req.Address {
			return false
		}
		return req.ContainerID == "" || e.ContainerID == req.ContainerID
	})
	return nil
}

// DNSLookup implements api.Backend.
func (f *Fake) DNSLookup(ctx context.Context, name string) (*client.DNSLookup, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.errLocked("DNSLookup"); err != nil {
		return nil, err
	}
	f.counters["dns_queries_total"]++
	l := &client.DNSLookup{Name: fqdn(name)}
	for _, e := range f.records {
		if e.Name == l.Name {
			l.Addresses = append(l.Addresses, e.Address)
		}
	}
	if len(l.Addresses) == 0 {
		return nil, fmt.Errorf("dns lookup %s: %w: no such name", l.Name, api.ErrNotFound)
	}
	return l, nil
}

// Connect implements api.Backend.
func (f *Fake) Connect(ctx context.Context, peers []string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.errLocked("Connect"); err != nil {
		return err
	}
	for _, p := range peers {
		if !slices.Contains(f.targets, p) {
			f.targets = append(f.targets, p)
		}
	}
	return nil
}

// Forget implements api.Backend.
func (f *Fake) Forget(ctx context.Context, peers []string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.errLocked("Forget"); err != nil {
		return err
	}
	f.targets = slices.DeleteFunc(f.targets, func(t string) bool { return slices.Contains(peers, t) })
	return nil
}

// Rmpeer implements api.Backend: a dead peer's ranges become this peer's.
func (f *Fake) Rmpeer(ctx context.Context, name string) (*client.RmpeerResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.errLocked("Rmpeer"); err != nil {
		return nil, err
	}
	i := slices.IndexFunc(f.peers, func(p client.Peer) bool { return p.Name == name })
	if i < 0 {
		return nil, fmt.Errorf("rmpeer %s: %w: no such peer (see 'weft status peers')", name, api.ErrNotFound)
	}
	p := f.peers[i]
	if p.Self || p.State == "alive" || p.State == "suspect" {
		return nil, fmt.Errorf("rmpeer %s: %w: the peer is %s; stop it first, or wait until it is reported dead", name, api.ErrConflict, p.State)
	}
	res := &client.RmpeerResult{Name: name}
	for j, r := range f.ranges {
		if r.Owner == p.ID {
			r.Owner, r.OwnerName, r.Reachable = SelfID, SelfName, true
			f.ranges[j] = r
			res.Reclaimed += r.Size
		}
	}
	f.peers = slices.Delete(f.peers, i, i+1)
	f.records = slices.DeleteFunc(f.records, func(e client.DNSEntry) bool { return e.Owner == p.ID })
	return res, nil
}

// Counters implements api.Backend.
func (f *Fake) Counters() map[string]float64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.counters["reconcile_runs_total"]++
	return maps.Clone(f.counters)
}

// Leave hands every range of this peer to the first other reachable owner.
func (f *Fake) Leave(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.errLocked("Leave"); err != nil {
		return err
	}
	to := slices.IndexFunc(f.peers, func(p client.Peer) bool { return !p.Self && p.State == "alive" })
	if to < 0 {
		return fmt.Errorf("leave: %w: no live peer to hand the address space to", api.ErrUnavailable)
	}
	for j, r := range f.ranges {
		if r.Owner == SelfID {
			r.Owner, r.OwnerName = f.peers[to].ID, f.peers[to].Name
			f.ranges[j] = r
		}
	}
	return nil
}
