package router

// Reconciliation: read the kernel, compare with the plan, change only the
// difference. Order matters only for creation: devices first (routes need
// them), then sysctls of those devices, the bridge address (routes use it as
// source), neighbours and FDB entries (so the first routed packet finds its
// next hop resolved), routes, WireGuard peers, the masquerade. Each step
// carries on after an error so that one bad peer does not block the others;
// the errors are joined and the periodic resync retries.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// reconcileLocked makes the kernel match cfg: by the difference from what
// it last applied when only per-peer entries changed (incremental.go),
// else in full. force runs the full reconcile and reapplies the WireGuard
// configuration even if it did not change since the last call (resync
// repairs drift, such as peers removed by hand). Caller holds r.recMu.
func (r *Router) reconcileLocked(ctx context.Context, cfg Config, force bool) (plan, error) {
	var u Underlay
	var errs []error
	if knownUnderlay(cfg) {
		var err error
		if u, err = r.kernel.Underlay(cfg.Underlay); err != nil {
			err = fmt.Errorf("underlay %v: %w", cfg.Underlay, err)
			if cfg.uses(TransportVXLAN) || cfg.uses(TransportDirect) {
				errs = append(errs, err) // VXLAN's source address, direct's subnet
			} else {
				// WireGuard needs it only for the MTU: fall back to 1500.
				r.log.Warn("underlay device not found; assuming MTU 1500", "err", err)
			}
		}
	}
	p := makePlan(cfg, u)
	mv, err := r.macvlanFor(cfg, u) // underlay.go
	errs = append(errs, err)
	p.routes = withMacvlanRoutes(p.routes, mv)
	if !force && errors.Join(errs...) == nil {
		if ok, err := r.reconcileIncremental(cfg, p, mv); ok {
			return p, err
		}
	}
	r.applied = nil

	if err := r.ensureSysctl(p.sysctls[0]); err != nil { // ip_forward first
		errs = append(errs, err)
	}
	errs = append(errs, r.ensureLink(p.bridge))
	if p.vxlan != nil {
		errs = append(errs, r.ensureLink(*p.vxlan))
	} else {
		errs = append(errs, r.deleteLinkIfPresent(cfg.VXIface))
	}
	if p.wireguard {
		errs = append(errs, r.ensureWG(ctx, cfg, p, force))
	} else {
		errs = append(errs, r.deleteWG(ctx, cfg))
	}
	for _, s := range p.sysctls[1:] {
		errs = append(errs, r.ensureSysctl(s))
	}
	errs = append(errs, r.ensureAddr(cfg.Bridge, p.addr))
	if p.vxlan != nil {
		errs = append(errs, r.ensureAddr(cfg.VXIface, p.tunAddr))
	}
	if p.wireguard {
		errs = append(errs, r.ensureAddr(cfg.WGIface, p.tunAddr))
	}
	if p.local != nil {
		errs = append(errs, r.ensureLink(*p.local), r.ensureAddr(cfg.LocalIface, p.localAddr))
	} else {
		errs = append(errs, r.deleteLinkIfPresent(cfg.LocalIface))
	}
	if p.vxlan != nil {
		errs = append(errs, r.ensureFDB(cfg.VXIface, p.fdbs), r.ensureNeigh(cfg.VXIface, p.neighs))
	}
	errs = append(errs, r.ensureMacvlan(cfg.Macvlan.Iface, mv))
	errs = append(errs, r.ensureRoutes(p.routes), r.ensureNft(p.masq))
	err = errors.Join(errs...)
	if err == nil {
		r.applied = newApplied(cfg, p, mv)
	}
	return p, err
}

func (r *Router) ensureSysctl(s sysctl) error {
	v, err := r.kernel.SysctlGet(s.key)
	if err == nil && v == s.value {
		return nil
	}
	if err := r.kernel.SysctlSet(s.key, s.value); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", s.key, s.value, err)
	}
	return nil
}

// kindMatches reports whether a device of kind have serves as kind want:
// a bridge without ports stands in for a dummy on kernels without the
// dummy driver.
func kindMatches(have, want string) bool {
	return have == want || (want == "dummy" && have == "bridge")
}

// linkMatches reports whether have already satisfies want.
func linkMatches(have, want Link) bool {
	if have.MTU != want.MTU || have.Up != want.Up {
		return false
	}
	if want.Kind != "" && (!kindMatches(have.Kind, want.Kind) || have.VXLAN != want.VXLAN) {
		return false
	}
	if want.Parent != "" && have.Parent != want.Parent {
		return false
	}
	return want.HardwareAddr == nil || bytes.Equal(have.HardwareAddr, want.HardwareAddr)
}

func (r *Router) ensureLink(want Link) error {
	have, err := r.kernel.LinkGet(want.Name)
	if err == nil && linkMatches(have, want) {
		return nil
	}
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("link get %s: %w", want.Name, err)
	}
	if err := r.kernel.LinkEnsure(want); err != nil {
		return fmt.Errorf("link ensure %v: %w", want, err)
	}
	return nil
}

func (r *Router) deleteLinkIfPresent(name string) error {
	if _, err := r.kernel.LinkGet(name); errors.Is(err, ErrNotFound) {
		return nil
	}
	if err := r.kernel.LinkDelete(name); err != nil {
		return fmt.Errorf("link delete %s: %w", name, err)
	}
	return nil
}

func (r *Router) ensureAddr(dev string, want netip.Prefix) error {
	have, err := r.kernel.AddrList(dev)
	if err != nil {
		return fmt.Errorf("addr list dev %s: %w", dev, err)
	}
	var errs []error
	for _, a := range have {
		if a != want {
			if err := r.kernel.AddrDelete(dev, a); err != nil {
				errs = append(errs, fmt.Errorf("addr delete %v dev %s: %w", a, dev, err))
			}
		}
	}
	if want.IsValid() && !slices.Contains(have, want) {
		if err := r.kernel.AddrEnsure(dev, want); err != nil {
			errs = append(errs, fmt.Errorf("addr add %v dev %s: %w", want, dev, err))
		}
	}
	return errors.Join(errs...)
}

func (r *Router) ensureRoutes(want []Route) error {
	have, err := r.kernel.RouteList()
	if err != nil {
		return fmt.Errorf("route list: %w", err)
	}
	have, extra := oneRoutePerDst(have, want)
	del, set := diffRoutes(have, want)
	var errs []error
	for _, rt := range append(extra, del...) {
		if err := r.kernel.RouteDelete(rt); err != nil {
			errs = append(errs, fmt.Errorf("route delete %v: %w", rt, err))
		}
	}
	for _, rt := range set {
		if err := r.kernel.RouteReplace(rt); err != nil {
			errs = append(errs, fmt.Errorf("route replace %v: %w", rt, err))
		}
	}
	return errors.Join(errs...)
}

// oneRoutePerDst splits the kernel's routes have: the kernel may hold
// several routes to one destination (other metrics, added by hand), and
// RouteReplace overwrites only one of them. Of the routes to a wanted
// destination it keeps the first one equal to the wanted route, else the
// first one (for RouteReplace to overwrite), and returns the others as
// extra, to delete. Routes to destinations nobody wants are all kept:
// diffRoutes deletes them.
func oneRoutePerDst(have, want []Route) (kept, extra []Route) {
	wantBy := make(map[netip.Prefix]Route, len(want))
	for _, rt := range want {
		wantBy[rt.Dst] = rt
	}
	keep := make(map[netip.Prefix]int, len(want)) // wanted destination → index in have of the route kept
	for i, rt := range have {
		if w, ok := wantBy[rt.Dst]; ok && w == rt {
			if _, ok := keep[rt.Dst]; !ok {
				keep[rt.Dst] = i
			}
		}
	}
	for i, rt := range have {
		if _, ok := wantBy[rt.Dst]; ok {
			if _, ok := keep[rt.Dst]; !ok {
				keep[rt.Dst] = i // no exact match: the first, for RouteReplace
			}
		}
	}
	for i, rt := range have {
		if j, ok := keep[rt.Dst]; ok && i != j {
			extra = append(extra, rt)
		} else {
			kept = append(kept, rt)
		}
	}
	return kept, extra
}

func (r *Router) ensureNeigh(dev string, want []Neigh) error {
	have, err := r.kernel.NeighList(dev)
	if err != nil {
		return fmt.Errorf("neigh list dev %s: %w", dev, err)
	}
	del, set := diffNeighs(have, want)
	var errs []error
	for _, n := range del {
		if err := r.kernel.NeighDelete(n); err != nil {
			errs = append(errs, fmt.Errorf("neigh delete %v: %w", n, err))
		}
	}
	for _, n := range set {
		if err := r.kernel.NeighSet(n); err != nil {
			errs = append(errs, fmt.Errorf("neigh replace %v: %w", n, err))
		}
	}
	return errors.Join(errs...)
}

func (r *Router) ensureFDB(dev string, want []FDB) error {
	have, err := r.kernel.FDBList(dev)
	if err != nil {
		return fmt.Errorf("fdb list dev %s: %w", dev, err)
	}
	del, set := diffFDBs(have, want)
	var errs []error
	for _, f := range del {
		if err := r.kernel.FDBDelete(f); err != nil {
			errs = append(errs, fmt.Errorf("fdb delete %v: %w", f, err))
		}
	}
	for _, f := range set {
		if err := r.kernel.FDBSet(f); err != nil {
			errs = append(errs, fmt.Errorf("fdb append %v: %w", f, err))
		}
	}
	return errors.Join(errs...)
}

// diffKeyed returns the entries of have to delete and those of want to set
// so that have becomes want, entries matched by key: an entry of have whose
// key is not wanted is deleted; the entries of want with a key are set
// unless have holds that key with an entry the same as the last wanted one.
// For a key met several times the last entry counts, as it does in the
// kernel after setting them in order. Both results keep their input order.
// The full reconcile diffs the kernel's entries with the plan's
// (ensureRoutes, ensureNeigh, ensureFDB); the incremental one diffs the
// last plan with the new (diffPlans).
func diffKeyed[K comparable, E any](have, want []E, key func(E) K, same func(a, b E) bool) (del, set []E) {
	wantBy := make(map[K]E, len(want))
	for _, w := range want {
		wantBy[key(w)] = w
	}
	haveBy := make(map[K]E, len(have))
	for _, h := range have {
		k := key(h)
		if _, ok := wantBy[k]; !ok {
			del = append(del, h)
			continue
		}
		haveBy[k] = h
	}
	for _, w := range want {
		k := key(w)
		if h, ok := haveBy[k]; ok && same(h, wantBy[k]) {
			continue
		}
		set = append(set, w)
	}
	return del, set
}

// diffRoutes keys routes by destination: RouteReplace overwrites a route
// to the same destination with another next hop.
func diffRoutes(have, want []Route) (del, set []Route) {
	return diffKeyed(have, want,
		func(rt Route) netip.Prefix { return rt.Dst },
		func(a, b Route) bool { return a == b })
}

// diffNeighs keys neighbours by address; a changed MAC is set anew.
func diffNeighs(have, want []Neigh) (del, set []Neigh) {
	return diffKeyed(have, want,
		func(n Neigh) netip.Addr { return n.IP },
		func(a, b Neigh) bool { return a.MAC.String() == b.MAC.String() })
}

// fdbKey identifies a forwarding entry: a MAC may have several remote
// destinations.
type fdbKey struct {
	mac string
	dst netip.Addr
}

// diffFDBs keys FDB entries by MAC and destination: an entry is there or
// not.
func diffFDBs(have, want []FDB) (del, set []FDB) {
	return diffKeyed(have, want,
		func(f FDB) fdbKey { return fdbKey{f.MAC.String(), f.Dst} },
		func(a, b FDB) bool { return true })
}

func (r *Router) ensureNft(want netip.Prefix) error {
	have, err := r.kernel.NftGet()
	if err != nil {
		return fmt.Errorf("nft get table weft: %w", err)
	}
	switch {
	case have == want:
		return nil
	case !want.IsValid():
		err = r.kernel.NftDelete()
	default:
		err = r.kernel.NftSet(want)
	}
	if err != nil {
		return fmt.Errorf("nft masquerade %v: %w", want, err)
	}
	return nil
}

// ensureWG creates or adopts the WireGuard device, sets its MTU and state,
// and configures its peers when they changed (or always, if force).
func (r *Router) ensureWG(ctx context.Context, cfg Config, p plan, force bool) error {
	if r.wg == nil {
		if r.factory == nil {
			return ErrNoWireGuard
		}
		dev, err := r.factory(ctx, WGDeviceConfig{Name: cfg.WGIface, MTU: p.mtu,
			DatapathCommand: r.opts.DatapathCommand, ExternalDatapath: r.opts.ExternalDatapath, Logger: r.base})
		if err != nil {
			return fmt.Errorf("wireguard device %s: %w", cfg.WGIface, err)
		}
		r.wg, r.wgApplied = dev, nil
		force = true
	}
	var errs []error
	errs = append(errs, r.ensureLink(Link{Name: cfg.WGIface, MTU: p.mtu, Up: true}))
	applied := &wgApplied{key: cfg.WGPrivateKey, port: cfg.WGPort, peers: p.wgPeers}
	if force || r.wgApplied == nil || !r.wgApplied.equal(applied) {
		errs = append(errs, r.configureWG(cfg, p.wgPeers))
	}
	return errors.Join(errs...)
}

// configureWG hands the WireGuard device its key, port and peers and
// records them as applied (none on error, so that the next reconcile
// configures again). Caller holds r.recMu; r.wg is not nil.
func (r *Router) configureWG(cfg Config, peers []WGPeer) error {
	if err := r.wg.Configure(cfg.WGPrivateKey, int(cfg.WGPort), slices.Clone(peers)); err != nil {
		r.wgApplied = nil
		return fmt.Errorf("wireguard configure %s: %w", cfg.WGIface, err)
	}
	r.wgApplied = &wgApplied{key: cfg.WGPrivateKey, port: cfg.WGPort, peers: peers}
	return nil
}

// deleteWG removes a WireGuard device left from an earlier transport.
func (r *Router) deleteWG(ctx context.Context, cfg Config) error {
	if r.wg != nil {
		err := r.wg.Delete()
		r.wg, r.wgApplied = nil, nil
		if err != nil {
			return fmt.Errorf("wireguard delete %s: %w", cfg.WGIface, err)
		}
		return nil
	}
	if _, err := r.kernel.LinkGet(cfg.WGIface); errors.Is(err, ErrNotFound) {
		return nil
	}
	if r.factory != nil {
		// Adopt it first so that a userspace datapath process stops too.
		if dev, err := r.factory(ctx, WGDeviceConfig{Name: cfg.WGIface, MTU: defaultUnderlayMTU,
			DatapathCommand: r.opts.DatapathCommand, ExternalDatapath: r.opts.ExternalDatapath, Logger: r.base}); err == nil {
			if err := dev.Delete(); err == nil {
				return nil
			}
		}
	}
	return r.deleteLinkIfPresent(cfg.WGIface)
}

// wgApplied is the WireGuard configuration last applied successfully.
type wgApplied struct {
	key   string
	port  uint16
	peers []WGPeer
}

func (a *wgApplied) equal(b *wgApplied) bool {
	return a.key == b.key && a.port == b.port && sameWGPeers(a.peers, b.peers)
}
