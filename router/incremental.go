package router

// Incremental reconcile.
//
// A full reconcile reads the kernel (links, addresses, sysctls, every route,
// neighbour and FDB entry, the nft table) and changes the difference. At
// 1,000 peers that is thousands of entries read on every Set, and a Set
// comes with every ring or membership change. So the router remembers what
// the last reconcile applied without error, and while the devices stay the
// same it applies only the difference between that plan and the new one:
// the routes, neighbours and FDB entries that appeared, changed or went,
// and the WireGuard peers when they changed. It reads nothing from the
// kernel for them. The plan and its diff stay pure (diffPlans); only the
// application touches the kernel.
//
// The full reconcile still runs: the first time, after any error (so a
// failed step is retried against what the kernel really holds), when a
// device, address, sysctl, name, key or the masquerade changes, and at
// every periodic resync, which repairs drift (an entry someone deleted by
// hand) within ResyncInterval.

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
)

// applied is what the last reconcile applied without error.
type applied struct {
	names   [4]string // VXIface, WGIface, LocalIface, Macvlan.Iface
	wgKey   string
	wgPort  uint16
	p       plan
	mvLink  *Link
	mvAddr  netip.Prefix
	mvSysct []sysctl
}

func newApplied(cfg Config, p plan, mv macvlanPlan) *applied {
	return &applied{
		names: [4]string{cfg.VXIface, cfg.WGIface, cfg.LocalIface, cfg.Macvlan.Iface},
		wgKey: cfg.WGPrivateKey, wgPort: cfg.WGPort,
		p: p, mvLink: mv.link, mvAddr: mv.addr, mvSysct: mv.sysctls,
	}
}

// sameDevices reports whether a and b want the same devices, names,
// addresses, sysctls, WireGuard key and port, and masquerade: everything
// but the per-peer entries, which diffPlans handles.
func sameDevices(a, b *applied) bool {
	pa, pb := a.p, b.p
	return a.names == b.names && a.wgKey == b.wgKey && a.wgPort == b.wgPort &&
		pa.mtu == pb.mtu && pa.wireguard == pb.wireguard &&
		pa.addr == pb.addr && pa.tunAddr == pb.tunAddr && pa.localAddr == pb.localAddr &&
		pa.masq == pb.masq &&
		reflect.DeepEqual(pa.bridge, pb.bridge) && reflect.DeepEqual(pa.vxlan, pb.vxlan) &&
		reflect.DeepEqual(pa.local, pb.local) && slices.Equal(pa.sysctls, pb.sysctls) &&
		reflect.DeepEqual(a.mvLink, b.mvLink) && a.mvAddr == b.mvAddr && slices.Equal(a.mvSysct, b.mvSysct)
}

// planDiff is what changes between two plans with the same devices.
type planDiff struct {
	routeDel, routeSet []Route
	neighDel, neighSet []Neigh
	fdbDel, fdbSet     []FDB
	wgPeers            bool // the WireGuard peers changed
}

func (d planDiff) empty() bool {
	return len(d.routeDel)+len(d.routeSet)+len(d.neighDel)+len(d.neighSet)+len(d.fdbDel)+len(d.fdbSet) == 0 && !d.wgPeers
}

// diffPlans returns the entries to delete and to set to go from the plan
// old to the plan new, matched as the full reconcile matches the kernel's
// (diffRoutes, diffNeighs, diffFDBs in reconcile.go).
func diffPlans(old, new plan) planDiff {
	var d planDiff
	d.routeDel, d.routeSet = diffRoutes(old.routes, new.routes)
	d.neighDel, d.neighSet = diffNeighs(old.neighs, new.neighs)
	d.fdbDel, d.fdbSet = diffFDBs(old.fdbs, new.fdbs)
	d.wgPeers = !sameWGPeers(old.wgPeers, new.wgPeers)
	return d
}

// applyDiff changes the kernel by d, in the full reconcile's order:
// WireGuard peers, FDB entries and neighbours (so the first routed packet
// finds its next hop resolved), then routes. Caller holds r.recMu.
func (r *Router) applyDiff(cfg Config, p plan, d planDiff) error {
	var errs []error
	if d.wgPeers {
		if r.wg == nil {
			return fmt.Errorf("wireguard %s: no device", cfg.WGIface)
		}
		errs = append(errs, r.configureWG(cfg, p.wgPeers))
	}
	for _, f := range d.fdbDel {
		if err := r.kernel.FDBDelete(f); err != nil && !errors.Is(err, ErrNotFound) {
			errs = append(errs, fmt.Errorf("fdb delete %v: %w", f, err))
		}
	}
	for _, f := range d.fdbSet {
		if err := r.kernel.FDBSet(f); err != nil {
			errs = append(errs, fmt.Errorf("fdb append %v: %w", f, err))
		}
	}
	for _, n := range d.neighDel {
		if err := r.kernel.NeighDelete(n); err != nil && !errors.Is(err, ErrNotFound) {
			errs = append(errs, fmt.Errorf("neigh delete %v: %w", n, err))
		}
	}
	for _, n := range d.neighSet {
		if err := r.kernel.NeighSet(n); err != nil {
			errs = append(errs, fmt.Errorf("neigh replace %v: %w", n, err))
		}
	}
	for _, rt := range d.routeDel {
		if err := r.kernel.RouteDelete(rt); err != nil && !errors.Is(err, ErrNotFound) {
			errs = append(errs, fmt.Errorf("route delete %v: %w", rt, err))
		}
	}
	for _, rt := range d.routeSet {
		if err := r.kernel.RouteReplace(rt); err != nil {
			errs = append(errs, fmt.Errorf("route replace %v: %w", rt, err))
		}
	}
	return errors.Join(errs...)
}

// reconcileIncremental applies cfg as a difference from r.applied when
// only per-peer entries changed. ok is false when it cannot (nothing
// applied yet, or a device changed): the caller then runs the full
// reconcile. Caller holds r.recMu.
func (r *Router) reconcileIncremental(cfg Config, p plan, mv macvlanPlan) (ok bool, err error) {
	prev := r.applied
	next := newApplied(cfg, p, mv)
	if prev == nil || !sameDevices(prev, next) || (p.wireguard && r.wg == nil) {
		return false, nil
	}
	d := diffPlans(prev.p, p)
	if d.empty() {
		return true, nil
	}
	if err = r.applyDiff(cfg, p, d); err != nil {
		r.applied = nil // the next reconcile is a full one
		return true, err
	}
	r.applied = next
	return true, nil
}
