package router

// The real Kernel: rtnetlink through vishvananda/netlink, sysctls through
// /proc/sys, nftables through google/nftables. Every operation can be bound
// to a network namespace other than the caller's (tests run one Router per
// throwaway namespace in one process).

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NetlinkOptions select the namespace a NetlinkKernel works in.
type NetlinkOptions struct {
	// NetNSPath is a network namespace file (/var/run/netns/NAME,
	// /proc/PID/ns/net); "" = the namespace of the calling thread.
	NetNSPath string
}

// NetlinkKernel implements Kernel on the running Linux kernel.
type NetlinkKernel struct {
	h  *netlink.Handle
	ns netns.NsHandle // -1 when working in the caller's namespace
}

var _ Kernel = (*NetlinkKernel)(nil)

// NewNetlinkKernel opens netlink handles in the selected namespace.
func NewNetlinkKernel(opts NetlinkOptions) (*NetlinkKernel, error) {
	k := &NetlinkKernel{ns: -1}
	var err error
	if opts.NetNSPath == "" {
		k.h, err = netlink.NewHandle()
	} else {
		if k.ns, err = netns.GetFromPath(opts.NetNSPath); err != nil {
			return nil, fmt.Errorf("open netns %s: %w", opts.NetNSPath, err)
		}
		k.h, err = netlink.NewHandleAt(k.ns)
	}
	if err != nil {
		k.Close()
		return nil, fmt.Errorf("netlink handle: %w", err)
	}
	return k, nil
}

// Close releases the handles.
func (k *NetlinkKernel) Close() {
	if k.h != nil {
		k.h.Close()
	}
	if k.ns >= 0 {
		k.ns.Close()
	}
}

// Do runs fn on an OS thread inside the kernel's namespace (directly when it
// is the caller's).
func (k *NetlinkKernel) Do(fn func() error) error {
	if k.ns < 0 {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("get current netns: %w", err)
			return // the thread is discarded with its lock
		}
		defer orig.Close()
		if err := netns.Set(k.ns); err != nil {
			errc <- fmt.Errorf("enter netns: %w", err)
			return
		}
		err = fn()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

func (k *NetlinkKernel) link(name string) (netlink.Link, error) {
	l, err := k.h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, fmt.Errorf("link %s: %w", name, ErrNotFound)
		}
		return nil, fmt.Errorf("link %s: %w", name, err)
	}
	return l, nil
}

// LinkGet implements Kernel.
func (k *NetlinkKernel) LinkGet(name string) (Link, error) {
	l, err := k.link(name)
	if err != nil {
		return Link{}, err
	}
	a := l.Attrs()
	out := Link{Name: a.Name, Kind: l.Type(), MTU: a.MTU, Up: a.Flags&net.FlagUp != 0, HardwareAddr: a.HardwareAddr}
	if vx, ok := l.(*netlink.Vxlan); ok {
		local, _ := netip.AddrFromSlice(vx.SrcAddr)
		out.VXLAN = VXLAN{VNI: uint32(vx.VxlanId), Port: uint16(vx.Port), Local: local.Unmap()}
	}
	if _, ok := l.(*netlink.Macvlan); ok && a.ParentIndex > 0 {
		if p, err := k.h.LinkByIndex(a.ParentIndex); err == nil {
			out.Parent = p.Attrs().Name
		}
	}
	return out, nil
}

// LinkEnsure implements Kernel.
func (k *NetlinkKernel) LinkEnsure(want Link) error {
	l, err := k.link(want.Name)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	if l != nil && want.Kind != "" {
		have, _ := k.LinkGet(want.Name)
		if !kindMatches(have.Kind, want.Kind) || (want.Kind == "vxlan" && have.VXLAN != want.VXLAN) ||
			(want.Parent != "" && have.Parent != want.Parent) {
			if err := k.h.LinkDel(l); err != nil {
				return fmt.Errorf("link delete %s for recreation: %w", want.Name, err)
			}
			l = nil
		}
	}
	if l == nil {
		attrs := netlink.NewLinkAttrs()
		attrs.Name, attrs.MTU, attrs.HardwareAddr = want.Name, want.MTU, want.HardwareAddr
		var nl netlink.Link
		switch want.Kind {
		case "bridge":
			nl = &netlink.Bridge{LinkAttrs: attrs}
		case "vxlan":
			nl = &netlink.Vxlan{LinkAttrs: attrs, VxlanId: int(want.VXLAN.VNI),
				SrcAddr: ipOrNil(want.VXLAN.Local), Port: int(want.VXLAN.Port), Learning: false}
		case "dummy":
			nl = &netlink.Dummy{LinkAttrs: attrs}
		case "macvlan":
			parent, err := k.link(want.Parent)
			if err != nil {
				return fmt.Errorf("link %s: parent: %w", want.Name, err)
			}
			attrs.ParentIndex = parent.Attrs().Index
			nl = &netlink.Macvlan{LinkAttrs: attrs, Mode: netlink.MACVLAN_MODE_BRIDGE}
		default:
			return fmt.Errorf("link %s: %w", want.Name, ErrNotFound)
		}
		err := k.h.LinkAdd(nl)
		if errors.Is(err, unix.EOPNOTSUPP) && want.Kind == "dummy" {
			// A kernel without the dummy driver (CONFIG_DUMMY unset, as in
			// some VM kernels): a bridge without ports holds a local
			// address just as well (it is delivered whatever the carrier).
			err = k.h.LinkAdd(&netlink.Bridge{LinkAttrs: attrs})
		}
		if err != nil {
			return fmt.Errorf("link add %s type %s: %w", want.Name, want.Kind, err)
		}
		if l, err = k.link(want.Name); err != nil {
			return err
		}
	}
	a := l.Attrs()
	if a.MTU != want.MTU {
		if err := k.h.LinkSetMTU(l, want.MTU); err != nil {
			return fmt.Errorf("link set %s mtu %d: %w", want.Name, want.MTU, err)
		}
	}
	if want.HardwareAddr != nil && a.HardwareAddr.String() != want.HardwareAddr.String() {
		if err := k.h.LinkSetHardwareAddr(l, want.HardwareAddr); err != nil {
			return fmt.Errorf("link set %s address %v: %w", want.Name, want.HardwareAddr, err)
		}
	}
	if want.Up && a.Flags&net.FlagUp == 0 {
		if err := k.h.LinkSetUp(l); err != nil {
			return fmt.Errorf("link set %s up: %w", want.Name, err)
		}
	}
	return nil
}

// LinkDelete implements Kernel.
func (k *NetlinkKernel) LinkDelete(name string) error {
	l, err := k.link(name)
	if errors.Is(err, ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	if err := k.h.LinkDel(l); err != nil {
		return fmt.Errorf("link delete %s: %w", name, err)
	}
	return nil
}

// AddrList implements Kernel.
func (k *NetlinkKernel) AddrList(dev string) ([]netip.Prefix, error) {
	l, err := k.link(dev)
	if err != nil {
		return nil, err
	}
	as, err := k.h.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("addr list dev %s: %w", dev, err)
	}
	var out []netip.Prefix
	for _, a := range as {
		if p, ok := prefixFromIPNet(a.IPNet); ok {
			out = append(out, p)
		}
	}
	return out, nil
}

// AddrEnsure implements Kernel.
func (k *NetlinkKernel) AddrEnsure(dev string, p netip.Prefix) error {
	l, err := k.link(dev)
	if err != nil {
		return err
	}
	a := &netlink.Addr{IPNet: ipNet(p), Flags: unix.IFA_F_NOPREFIXROUTE}
	if err := k.h.AddrReplace(l, a); err != nil {
		return fmt.Errorf("addr add %v dev %s: %w", p, dev, err)
	}
	return nil
}

// AddrDelete implements Kernel.
func (k *NetlinkKernel) AddrDelete(dev string, p netip.Prefix) error {
	l, err := k.link(dev)
	if err != nil {
		return err
	}
	if err := k.h.AddrDel(l, &netlink.Addr{IPNet: ipNet(p)}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("addr delete %v dev %s: %w", p, dev, err)
	}
	return nil
}

// SysctlGet implements Kernel.
func (k *NetlinkKernel) SysctlGet(key string) (string, error) {
	var v string
	err := k.Do(func() error {
		b, err := os.ReadFile("/proc/sys/" + key)
		v = strings.TrimSpace(string(b))
		return err
	})
	return v, err
}

// SysctlSet implements Kernel.
func (k *NetlinkKernel) SysctlSet(key, value string) error {
	return k.Do(func() error { return os.WriteFile("/proc/sys/"+key, []byte(value), 0o644) })
}

// Underlay implements Kernel.
func (k *NetlinkKernel) Underlay(addr netip.Addr) (Underlay, error) {
	family := netlink.FAMILY_V4
	if addr.Is6() && !addr.Is4In6() {
		family = netlink.FAMILY_V6
	}
	as, err := k.h.AddrList(nil, family)
	if err != nil {
		return Underlay{}, fmt.Errorf("addr list: %w", err)
	}
	for _, a := range as {
		p, ok := prefixFromIPNet(a.IPNet)
		if !ok || p.Addr() != addr.Unmap() {
			continue
		}
		l, err := k.h.LinkByIndex(a.LinkIndex)
		if err != nil {
			return Underlay{}, fmt.Errorf("link %d: %w", a.LinkIndex, err)
		}
		return Underlay{Dev: l.Attrs().Name, MTU: l.Attrs().MTU, Prefix: p}, nil
	}
	return Underlay{}, fmt.Errorf("no device holds %v: %w", addr, ErrNotFound)
}

// ipOrNil converts at the netlink boundary; invalid = nil.
func ipOrNil(a netip.Addr) net.IP {
	if !a.IsValid() {
		return nil
	}
	return a.AsSlice()
}

// ipNet converts at the netlink boundary.
func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func prefixFromIPNet(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}
