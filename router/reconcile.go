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
	del, set := diffRoutes(have, want)
	var errs []error
	for _, rt := range del {
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

// diffSorted returns the entries of have to delete and those of want to
// set so that have becomes want, entries matched by the key that order
// compares. want is a plan's, sorted by order. have is another plan's, or
// the kernel's in its own order (sorted here, into a copy: a stable sort,
// so the kernel's order among entries with one key stays), possibly with
// several entries for one key (routes to one destination with other
// metrics, added by hand), of which a replace overwrites only one. Of the
// entries of have with a wanted key, the first one the same as the wanted
// entry is kept, else the first one, and the wanted entry set (to
// overwrite it); the others are deleted, as are the entries whose key
// nobody wants. For a key wanted several times the last wanted entry
// counts, as it would in the kernel after setting them in order. A merge
// of two sorted lists: at 1,000 peers every Set diffs thousands of
// entries, and this allocates only what it returns. The full reconcile
// diffs the kernel's entries with the plan's (ensureRoutes, ensureNeigh,
// ensureFDB); the incremental one the last plan with the new (diffPlans).
func diffSorted[E any](have, want []E, order func(a, b E) int, same func(a, b E) bool) (del, set []E) {
	if !slices.IsSortedFunc(have, order) {
		have = slices.Clone(have)
		slices.SortStableFunc(have, order)
	}
	if !slices.IsSortedFunc(want, order) { // never from a plan; kept correct anyway
		want = slices.Clone(want)
		slices.SortStableFunc(want, order)
	}
	for len(have) > 0 || len(want) > 0 {
		var c int
		switch {
		case len(have) == 0:
			c = 1
		case len(want) == 0:
			c = -1
		default:
			c = order(have[0], want[0])
		}
		var w E // the last wanted entry with the first key of want
		if c >= 0 {
			n := keyRun(want, order)
			w, want = want[n-1], want[n:]
		}
		if c > 0 { // wanted, not there
			set = append(set, w)
			continue
		}
		n := keyRun(have, order)
		group := have[:n]
		have = have[n:]
		if c < 0 { // not wanted
			del = append(del, group...)
			continue
		}
		keep := slices.IndexFunc(group, func(h E) bool { return same(h, w) })
		if keep < 0 {
			keep = 0
			set = append(set, w)
		}
		for i, h := range group {
			if i != keep {
				del = append(del, h)
			}
		}
	}
	return del, set
}

// keyRun returns how many entries at the head of sorted (not empty) share
// its first entry's key.
func keyRun[E any](sorted []E, order func(a, b E) int) int {
	n := 1
	for n < len(sorted) && order(sorted[n], sorted[0]) == 0 {
		n++
	}
	return n
}

// byDst orders routes by destination, as plans hold them (one each).
func byDst(a, b Route) int { return comparePrefix(a.Dst, b.Dst) }

// byNeighIP orders neighbours by address, as plans hold them.
func byNeighIP(a, b Neigh) int { return a.IP.Compare(b.IP) }

// byFDB orders forwarding entries by MAC, then remote address, as plans
// hold them: a MAC may have several remote destinations.
func byFDB(a, b FDB) int {
	if c := bytes.Compare(a.MAC, b.MAC); c != 0 {
		return c
	}
	return a.Dst.Compare(b.Dst)
}

// diffRoutes keys routes by destination: RouteReplace overwrites a route
// to the same destination with another next hop.
func diffRoutes(have, want []Route) (del, set []Route) {
	return diffSorted(have, want, byDst, func(a, b Route) bool { return a == b })
}

// diffNeighs keys neighbours by address; a changed MAC is set anew.
func diffNeighs(have, want []Neigh) (del, set []Neigh) {
	return diffSorted(have, want, byNeighIP, func(a, b Neigh) bool { return bytes.Equal(a.MAC, b.MAC) })
}

// diffFDBs keys FDB entries by MAC and destination: an entry is there or
// not.
func diffFDBs(have, want []FDB) (del, set []FDB) {
	return diffSorted(have, want, byFDB, func(a, b FDB) bool { return true })
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
		r.setWG(dev)
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
		r.setWG(nil)
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
