package router

import (
	"context"
	"errors"
	"fmt"
)

// Reset removes everything weft created on this host: the WireGuard device
// (stopping the userspace datapath), the VXLAN device, the bridge, the
// local address's device, the host-side macvlan (weft-mv), every route
// marked with RouteProtocol and the nft table "weft". It uses the names of
// the last Set, or of DefaultConfig. ip_forward is left as it is: other
// software on the host may rely on it. The desired state is forgotten, so a
// running Run does not recreate anything until the next Set.
func (r *Router) Reset() error {
	r.mu.Lock()
	cfg := r.desired
	if cfg.Bridge == "" {
		cfg = DefaultConfig()
	}
	r.mu.Unlock()
	return r.ResetConfig(cfg)
}

// ResetConfig is Reset with the device names of cfg (Bridge, WGIface,
// VXIface, LocalIface): `weft reset` runs in a process that never called Set, and the
// names may differ from the defaults (--bridge, --wg-iface).
func (r *Router) ResetConfig(cfg Config) error {
	r.mu.Lock()
	r.haveCfg = false
	r.mu.Unlock()

	r.recMu.Lock()
	defer r.recMu.Unlock()
	r.applied = nil
	ctx, cancel := context.WithTimeout(context.Background(), wgSetupTimeout)
	defer cancel()
	errs := []error{r.deleteWG(ctx, cfg)}
	errs = append(errs, r.deleteLinkIfPresent(cfg.VXIface), r.deleteLinkIfPresent(cfg.Bridge), r.deleteLinkIfPresent(cfg.LocalIface))
	if cfg.Macvlan.Iface != "" {
		errs = append(errs, r.deleteLinkIfPresent(cfg.Macvlan.Iface))
	}
	routes, err := r.kernel.RouteList()
	if err != nil {
		errs = append(errs, fmt.Errorf("route list: %w", err))
	}
	for _, rt := range routes {
		if err := r.kernel.RouteDelete(rt); err != nil {
			errs = append(errs, fmt.Errorf("route delete %v: %w", rt, err))
		}
	}
	if err := r.kernel.NftDelete(); err != nil {
		errs = append(errs, fmt.Errorf("nft delete table weft: %w", err))
	}
	r.mu.Lock()
	r.mtu, r.transports, r.keyToID = 0, nil, nil
	r.mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("router reset: %w", err)
	}
	return nil
}
