package daemon

// Underlay mode: macvlan pods on the LAN, addressed by a second ring.
//
// --underlay-range names a pool inside the subnet of the peer's underlay
// interface (the one holding its gossip address). The peers divide it with
// a second ipam.Allocator, the same machinery as the pod range (bootstrap,
// donation, reclaim, persistence), on its own gossip channel
// ("ipam-underlay") and in its own file (underlay.db). Peers launched with
// different underlay ranges refuse each other's messages (ipam's range
// check); status names them.
//
// Before a pod gets an underlay address, the peer makes sure no machine on
// the LAN uses it: the addresses of peers and of the gateway are never
// handed out, and the others are probed with ARP (RFC 5227: a request
// from 0.0.0.0, a short wait; arpprobe_linux.go). An address that is
// excluded or answers is rekeyed in the ring's allocation state to
// "weft:taken:ADDR" (with the reason as its name): it stays allocated,
// persisted and out of every peer's reach, and status lists it.
//
// The host side (weft-mv, the /32 routes to local macvlan pods) is router
// state: routerConfig hands the router this peer's weft-mv address
// ("weft:mv", allocated from the pool like the bridge's from the pod
// range) and its macvlan pods.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/api"
	"github.com/weftmesh/weft/api/client"
	"github.com/weftmesh/weft/gossip"
	"github.com/weftmesh/weft/ipam"
	"github.com/weftmesh/weft/peer"
	"github.com/weftmesh/weft/router"
)

// Allocation IDs of the underlay pool that are not pods.
const (
	underlayHostID   = "weft:mv"     // the host's weft-mv address
	underlayTakenPfx = "weft:taken:" // + address: held back from pods
	underlayChannel  = "ipam-underlay"
	underlayDB       = "underlay.db"
	// maxProbeSkips bounds how many taken addresses one allocation walks
	// over before it gives up (a LAN full of unknown machines).
	maxProbeSkips = 64
)

// underlayState is the underlay pool and what the peer knows of the LAN.
type underlayState struct {
	alloc  *ipam.Allocator
	ch     *gossip.Channel
	master string       // device holding the underlay address
	subnet netip.Prefix // that device's address with its subnet length
	probe  func(ctx context.Context, dev string, a netip.Addr) (string, error)

	probes atomic.Uint64 // ARP probes run
	taken  atomic.Uint64 // addresses found taken (ARP answered or excluded)

	mu      sync.Mutex   // guards following
	gateway netip.Addr   // LAN gateway for pods; invalid = none known
	host    netip.Prefix // weft-mv's allocation; invalid = not yet
}

// validateUnderlay checks the underlay flags against the pod range.
func validateUnderlay(c Config) error {
	r := c.UnderlayRange
	if !r.IsValid() {
		if c.UnderlayGateway.IsValid() {
			return errors.New("--underlay-gateway needs --underlay-range")
		}
		return nil
	}
	switch {
	case !r.Addr().Is4() || r.Bits() < 8 || r.Bits() > 30:
		return fmt.Errorf("--underlay-range %s: want an IPv4 CIDR from /8 to /30 inside the LAN's subnet", r)
	case r.Masked() != r:
		return fmt.Errorf("--underlay-range %s: host bits set (did you mean %s?)", r, r.Masked())
	case r.Overlaps(c.IPAllocRange):
		return fmt.Errorf("--underlay-range %s overlaps the pod range %s", r, c.IPAllocRange)
	case c.UnderlayGateway.IsValid() && !c.UnderlayGateway.Is4():
		return fmt.Errorf("--underlay-gateway %s: want an IPv4 address", c.UnderlayGateway)
	case c.MacvlanIface == "" || len(c.MacvlanIface) > 15:
		return fmt.Errorf("--macvlan-iface %q: want an interface name of 1 to 15 bytes", c.MacvlanIface)
	}
	return nil
}

// checkUnderlaySubnet says whether the pool fits the subnet of the
// underlay interface: its addresses must be on-link for every peer.
func checkUnderlaySubnet(rng, subnet netip.Prefix, dev string, gw netip.Addr) error {
	if !subnet.IsValid() {
		return fmt.Errorf("--underlay-range %s: no interface holds this peer's underlay address", rng)
	}
	if subnet.Bits() > rng.Bits() || !subnet.Contains(rng.Addr()) {
		return fmt.Errorf("--underlay-range %s is not inside the subnet %s of %s (the interface holding this peer's underlay address %s): macvlan pods get addresses of that subnet",
			rng, subnet.Masked(), dev, subnet.Addr())
	}
	if gw.IsValid() && !subnet.Contains(gw) {
		return fmt.Errorf("--underlay-gateway %s is not inside the subnet %s of %s", gw, subnet.Masked(), dev)
	}
	return nil
}

// buildUnderlay makes the second ring, from the pod ring's config ic.
func (d *Daemon) buildUnderlay(ic ipam.Config, log *slog.Logger) error {
	if !d.cfg.UnderlayRange.IsValid() {
		return nil
	}
	self := d.mesh.LocalAddr().Addr()
	dev, subnet, gw, err := underlayLink(self)
	if err != nil {
		return fmt.Errorf("--underlay-range %s: %w", d.cfg.UnderlayRange, err)
	}
	if d.cfg.UnderlayGateway.IsValid() {
		gw = d.cfg.UnderlayGateway
	}
	if err := checkUnderlaySubnet(d.cfg.UnderlayRange, subnet, dev, gw); err != nil {
		return err
	}
	u := &underlayState{master: dev, subnet: subnet, gateway: gw, probe: d.arpProbe}
	ic.Range = d.cfg.UnderlayRange
	ic.DBPath = filepath.Join(d.cfg.DataDir, underlayDB)
	ic.Pool = "underlay"
	tr := &channelRef{}
	if u.alloc, err = ipam.New(ic, tr); err != nil {
		return fmt.Errorf("underlay pool: %w", err)
	}
	u.ch = d.mesh.Channel(underlayChannel, u.alloc)
	tr.c = u.ch
	d.under = u
	d.log.Info("underlay pool", "range", d.cfg.UnderlayRange, "master", dev, "subnet", subnet.Masked(), "gateway", gw)
	return nil
}

// startUnderlay runs the pool and the loop that gets weft-mv its address.
func (d *Daemon) startUnderlay(start func(string, func(context.Context) error)) {
	if d.under == nil {
		return
	}
	start("ipam-underlay", d.under.alloc.Run)
	start("underlay-host", d.underlayHostLoop)
}

// closeUnderlay closes the pool's store.
func (d *Daemon) closeUnderlay() error {
	if d.under == nil {
		return nil
	}
	return d.under.alloc.Close()
}

// underlayChanged is the pool's change notification (nil without a pool:
// never ready).
func (d *Daemon) underlayChanged() <-chan struct{} {
	if d.under == nil {
		return nil
	}
	return d.under.alloc.Changed()
}

// syncUnderlay feeds the pool's members to the pool.
func (d *Daemon) syncUnderlay(peers []peer.Info) {
	if d.under != nil {
		d.under.alloc.SetPeers(poolMembers(peers, d.id.ID, d.cfg.UnderlayRange))
	}
}

// poolMembers are the peers that run the underlay pool rng (their
// metadata says so), this peer (self) always included: the pool's ring
// is theirs alone. A peer without a pool, or with another range, never
// holds space in it, so it must not count in its bootstrap quorum or in
// the electorate of a reclaim (it could never answer).
func poolMembers(peers []peer.Info, self peer.ID, rng netip.Prefix) []peer.Info {
	var out []peer.Info
	for _, p := range peers {
		if p.ID == self || p.Meta.Underlay == rng {
			out = append(out, p)
		}
	}
	return out
}

// underlayHostLoop allocates weft-mv's address once the ring is ready.
func (d *Daemon) underlayHostLoop(ctx context.Context) error {
	u := d.under
	for ctx.Err() == nil {
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		p, err := d.allocateProbed(actx, underlayHostID, "")
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				d.log.Info("waiting for an underlay address for "+d.cfg.MacvlanIface, "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
			continue
		}
		u.mu.Lock()
		u.host = p
		u.mu.Unlock()
		d.log.Info("host macvlan address", "iface", d.cfg.MacvlanIface, "addr", p.Addr())
		d.poke()
		return nil
	}
	return nil
}

// macvlanConfig is the router's host side of the underlay pods.
func (d *Daemon) macvlanConfig() router.Macvlan {
	m := router.Macvlan{Iface: d.cfg.MacvlanIface}
	u := d.under
	if u == nil {
		return m
	}
	u.mu.Lock()
	host := u.host
	u.mu.Unlock()
	if !host.IsValid() {
		return m
	}
	m.Master, m.Addr = u.master, host.Addr()
	for _, a := range u.alloc.Allocations() {
		if isUnderlayPod(a.ID) {
			m.Pods = append(m.Pods, a.Addr.Addr())
		}
	}
	return m
}

// acceptUnderlay gives each router peer the underlay pool ranges it owns:
// under WireGuard, its macvlan pods' packets into our overlay arrive from
// it with their own source addresses, which its AllowedIPs must accept.
func (d *Daemon) acceptUnderlay(peers []router.Peer) {
	if d.under == nil {
		return
	}
	ranges := d.under.alloc.Ranges()
	for i := range peers {
		peers[i].Accept = ranges[peers[i].ID]
	}
}

// isUnderlayPod reports whether an underlay allocation is a pod's (not
// weft-mv's, not a taken address).
func isUnderlayPod(id string) bool { return !strings.HasPrefix(id, "weft:") }

// poolOf maps AllocateRequest.Pool to whether it asks for the underlay.
func poolOf(pool string) (underlay bool, err error) {
	switch pool {
	case "", client.PoolOverlay:
		return false, nil
	case client.PoolUnderlay:
		return true, nil
	}
	return false, fmt.Errorf("%w: pool %q: want %q or %q", api.ErrBadRequest, pool, client.PoolOverlay, client.PoolUnderlay)
}

// errNoUnderlay is what asking a peer without a pool for an underlay
// address gets.
func errNoUnderlay() error {
	return fmt.Errorf("%w: this peer has no underlay range: launch it with --underlay-range CIDR (a part of the subnet of its LAN interface, the same on every peer) to attach macvlan pods", api.ErrBadRequest)
}

// allocateUnderlay is Allocate from the underlay pool.
func (d *Daemon) allocateUnderlay(ctx context.Context, req client.AllocateRequest) (*client.Allocation, error) {
	u := d.under
	if u == nil {
		return nil, errNoUnderlay()
	}
	if !isUnderlayPod(req.ID) {
		return nil, fmt.Errorf("%w: allocation ID %q is reserved", api.ErrBadRequest, req.ID)
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	p, err := d.allocateProbed(ctx, req.ID, req.Pod)
	if err != nil {
		return nil, mapIPAMError(err)
	}
	d.nameAllocation(req, p.Addr())
	d.poke() // the host's route to the pod
	return d.underlayAllocation(ctx, req.ID, p, true), nil
}

// allocateProbed allocates id from the pool, skipping (and marking taken)
// every address that a peer or the gateway holds or that answers an ARP
// probe. An existing allocation is returned as it is.
func (d *Daemon) allocateProbed(ctx context.Context, id, name string) (netip.Prefix, error) {
	u := d.under
	if p, ok := u.alloc.Lookup(id); ok {
		return p, nil
	}
	for range maxProbeSkips {
		p, err := u.alloc.AllocateNamed(ctx, id, name)
		if err != nil {
			return netip.Prefix{}, err
		}
		reason := d.excludedReason(p.Addr())
		if reason == "" {
			u.probes.Add(1)
			if reason, err = u.probe(ctx, u.master, p.Addr()); err != nil {
				_ = u.alloc.Release(id)
				return netip.Prefix{}, fmt.Errorf("probe %s on %s: %w", p.Addr(), u.master, err)
			}
		}
		if reason == "" {
			return p, nil
		}
		u.taken.Add(1)
		d.log.Warn("underlay address taken; skipped", "addr", p.Addr(), "reason", reason)
		if err := u.alloc.Rekey(id, underlayTakenPfx+p.Addr().String(), reason); err != nil {
			return netip.Prefix{}, err
		}
	}
	return netip.Prefix{}, fmt.Errorf("allocate %q: %d addresses in a row are taken on the LAN: %w", id, maxProbeSkips, ipam.ErrNoSpace)
}

// excludedReason says why a is never handed out ("" = it may be): a
// peer's underlay address, this host's, the gateway's.
func (d *Daemon) excludedReason(a netip.Addr) string {
	u := d.under
	u.mu.Lock()
	gw := u.gateway
	u.mu.Unlock()
	var peers []peer.Info
	if d.mesh != nil {
		peers = d.withKnownOwners(d.mesh.Peers())
	}
	return excluded(a, gw, u.subnet.Addr(), peers)
}

// excluded is excludedReason's pure decision.
func excluded(a, gateway, self netip.Addr, peers []peer.Info) string {
	switch {
	case a == gateway:
		return "the LAN gateway"
	case a == self:
		return "this peer's underlay address"
	}
	for _, p := range peers {
		if p.Addr == a {
			return "the underlay address of peer " + p.Name
		}
	}
	return ""
}

// underlayAllocation fills in what weft-cni needs for a macvlan pod.
func (d *Daemon) underlayAllocation(ctx context.Context, id string, p netip.Prefix, wait bool) *client.Allocation {
	u := d.under
	u.mu.Lock()
	gw := u.gateway
	u.mu.Unlock()
	a := &client.Allocation{ID: id, Pool: client.PoolUnderlay, Master: u.master, PodRange: d.cfg.IPAllocRange.String(),
		Address: netip.PrefixFrom(p.Addr(), u.subnet.Bits()).String()}
	if gw.IsValid() {
		a.Gateway = gw.String()
	}
	for {
		u.mu.Lock()
		host := u.host
		u.mu.Unlock()
		if host.IsValid() {
			a.HostAddress = host.Addr().String()
			break
		}
		if !wait {
			break
		}
		select {
		case <-ctx.Done():
			return a
		case <-time.After(50 * time.Millisecond):
		}
	}
	d.mu.Lock()
	br := d.routed
	d.mu.Unlock()
	if br.IsValid() {
		a.DNS = d.podDNS(br.Addr())
	}
	return a
}

// lookupUnderlay is Lookup in the underlay pool.
func (d *Daemon) lookupUnderlay(ctx context.Context, id string) (*client.Allocation, bool) {
	if d.under == nil || !isUnderlayPod(id) {
		return nil, false
	}
	p, ok := d.under.alloc.Lookup(id)
	if !ok {
		return nil, false
	}
	return d.underlayAllocation(ctx, id, p, false), true
}

// releaseUnderlay releases id from the pool (idempotent).
func (d *Daemon) releaseUnderlay(id string) error {
	if d.under == nil || !isUnderlayPod(id) {
		return nil
	}
	if err := d.under.alloc.Release(id); err != nil {
		return err
	}
	d.poke() // the host's route to the pod goes
	return nil
}

// gcUnderlay releases the pool's pod allocations not in keep.
func (d *Daemon) gcUnderlay(keep []string) ([]string, error) {
	if d.under == nil {
		return nil, nil
	}
	k := append([]string(nil), keep...)
	for _, a := range d.under.alloc.Allocations() {
		if !isUnderlayPod(a.ID) {
			k = append(k, a.ID)
		}
	}
	released, err := d.under.alloc.GC(k)
	if len(released) > 0 {
		d.poke()
	}
	return released, err
}

// reclaimUnderlay takes a dead peer's underlay space over; a peer that
// owns none is fine.
func (d *Daemon) reclaimUnderlay(ctx context.Context, id peer.ID) (int64, error) {
	if d.under == nil {
		return 0, nil
	}
	n, err := d.under.alloc.Reclaim(ctx, id)
	if errors.Is(err, ipam.ErrNothingToReclaim) {
		return 0, nil
	}
	return n, err
}

// handoffUnderlay hands the pool's space over (Leave).
func (d *Daemon) handoffUnderlay(ctx context.Context) error {
	if d.under == nil {
		return nil
	}
	return d.under.alloc.Handoff(ctx)
}

// underlayAllocations are the pool's pod allocations (DNS names follow
// them as they follow the pod range's).
func (d *Daemon) underlayAllocations() []ipam.Allocation {
	if d.under == nil {
		return nil
	}
	var out []ipam.Allocation
	for _, a := range d.under.alloc.Allocations() {
		if isUnderlayPod(a.ID) {
			out = append(out, a)
		}
	}
	return out
}
