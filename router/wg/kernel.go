package wg

// Kernel WireGuard is preferred when the module exists: no process to keep
// alive, no copies through a TUN, and it survives control-plane restarts by
// itself. Its absence shows as EOPNOTSUPP from RTM_NEWLINK ("Unknown device
// type"); only that error falls back to userspace, anything else is real.

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ensureKernel makes sure a kernel WireGuard link name exists. It returns
// false (and no error) when the kernel has no WireGuard support or a
// userspace (TUN) device already has the name.
func ensureKernel(cfg Config, logger *slog.Logger) (bool, error) {
	link, err := netlink.LinkByName(cfg.Name)
	if err == nil {
		switch link.Type() {
		case "wireguard":
			logger.Debug("reusing kernel WireGuard link")
			return true, nil
		case "tuntap":
			return false, nil
		default:
			return false, fmt.Errorf("wg ensure %s: %w (type %s)", cfg.Name, ErrNotWireGuardLink, link.Type())
		}
	}
	if !errors.As(err, new(netlink.LinkNotFoundError)) {
		return false, fmt.Errorf("wg ensure %s: link lookup: %w", cfg.Name, err)
	}
	la := netlink.NewLinkAttrs()
	la.Name = cfg.Name
	la.MTU = cfg.MTU
	err = netlink.LinkAdd(&netlink.Wireguard{LinkAttrs: la})
	switch {
	case err == nil:
		logger.Info("created kernel WireGuard link", "mtu", cfg.MTU)
		return true, nil
	case errors.Is(err, unix.EOPNOTSUPP):
		logger.Info("no kernel WireGuard module; using the userspace datapath")
		return false, nil
	default:
		return false, fmt.Errorf("wg ensure %s: link add wireguard: %w", cfg.Name, err)
	}
}

// KernelSupported reports whether this network namespace's kernel can make
// WireGuard links. It adds a link of type wireguard named probe and removes
// it again: the only reliable test, since the module may be built in,
// loadable on demand or absent. A missing module is (false, nil).
func KernelSupported(probe string) (bool, error) {
	if err := validateLink(probe, 1420); err != nil {
		return false, err
	}
	la := netlink.NewLinkAttrs()
	la.Name = probe
	err := netlink.LinkAdd(&netlink.Wireguard{LinkAttrs: la})
	switch {
	case err == nil:
		return true, deleteKernel(probe)
	case errors.Is(err, unix.EOPNOTSUPP):
		return false, nil
	default:
		return false, fmt.Errorf("wg probe %s: link add wireguard: %w", probe, err)
	}
}

// deleteKernel removes the kernel link; a missing link is not an error.
func deleteKernel(name string) error {
	link, err := netlink.LinkByName(name)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("wg delete %s: %w", name, err)
	}
	if err := netlink.LinkDel(link); err != nil {
		return fmt.Errorf("wg delete %s: %w", name, err)
	}
	return nil
}
