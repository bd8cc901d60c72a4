package daemon

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// hostLocalLink is the localLink of the running kernel (rtnetlink).
type hostLocalLink struct{}

var _ localLink = hostLocalLink{}

// Ensure implements localLink.
func (hostLocalLink) Ensure(name string, addr netip.Prefix) (bool, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return false, fmt.Errorf("netlink handle: %w", err)
	}
	defer h.Close()
	changed := false
	l, err := linkByName(h, name)
	if err != nil {
		return false, err
	}
	if l != nil && l.Type() != "dummy" && l.Type() != "bridge" {
		if err := h.LinkDel(l); err != nil {
			return false, fmt.Errorf("link delete %s (type %s) for a dummy: %w", name, l.Type(), err)
		}
		l = nil
	}
	if l == nil {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = name
		err := h.LinkAdd(&netlink.Dummy{LinkAttrs: attrs})
		if errors.Is(err, unix.EOPNOTSUPP) {
			// A kernel without the dummy driver (CONFIG_DUMMY unset, as in
			// some VM kernels): a bridge without ports holds a local
			// address just as well (it is delivered whatever the carrier).
			err = h.LinkAdd(&netlink.Bridge{LinkAttrs: attrs})
		}
		if err != nil {
			return false, fmt.Errorf("link add %s type dummy: %w", name, err)
		}
		changed = true
		if l, err = linkByName(h, name); err != nil || l == nil {
			return changed, fmt.Errorf("link %s after adding it: %w", name, err)
		}
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(l); err != nil {
			return changed, fmt.Errorf("link set %s up: %w", name, err)
		}
		changed = true
	}
	family := netlink.FAMILY_V4
	if addr.Addr().Is6() {
		family = netlink.FAMILY_V6
	}
	have, err := h.AddrList(l, family)
	if err != nil {
		return changed, fmt.Errorf("addr list dev %s: %w", name, err)
	}
	found := false
	for _, a := range have {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		p := netip.PrefixFrom(ip.Unmap(), ones)
		switch {
		case p == addr:
			found = true
		case p.Addr().IsLinkLocalUnicast() && p.Addr().Is6():
		default:
			if err := h.AddrDel(l, &a); err != nil {
				return changed, fmt.Errorf("addr delete %v dev %s: %w", p, name, err)
			}
			changed = true
		}
	}
	if !found {
		ipn := &net.IPNet{IP: addr.Addr().AsSlice(), Mask: net.CIDRMask(addr.Bits(), addr.Addr().BitLen())}
		if err := h.AddrAdd(l, &netlink.Addr{IPNet: ipn}); err != nil {
			return changed, fmt.Errorf("addr add %v dev %s: %w", addr, name, err)
		}
		changed = true
	}
	return changed, nil
}

// Delete implements localLink.
func (hostLocalLink) Delete(name string) error {
	h, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("netlink handle: %w", err)
	}
	defer h.Close()
	l, err := linkByName(h, name)
	if err != nil || l == nil {
		return err
	}
	if err := h.LinkDel(l); err != nil {
		return fmt.Errorf("link delete %s: %w", name, err)
	}
	return nil
}

// linkByName returns the device, or nil when there is none.
func linkByName(h *netlink.Handle, name string) (netlink.Link, error) {
	l, err := h.LinkByName(name)
	var nf netlink.LinkNotFoundError
	switch {
	case errors.As(err, &nf):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("link get %s: %w", name, err)
	}
	return l, nil
}
