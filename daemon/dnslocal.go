package daemon

// The node-local DNS address, NodeLocal DNSCache's way: one link-local
// address, the same on every node (169.254.20.10 by convention), sits on a
// dummy device of the host, and the DNS server answers on it besides the
// bridge address. A pod reaches it through its default route (the host
// delivers it locally, whichever node the pod is on) with a dnsConfig, and
// the cluster's CoreDNS reaches it on any node with a stub domain for
// weft.local. A /32 (/128) has no prefix route, so the address changes no
// routing; weft owns the device by its name (--dns-local-iface): a device
// of that name that is not a dummy is replaced and other addresses on it
// are removed, so a changed --dns-local-address moves the address. A
// kernel without the dummy driver gets a bridge without ports instead: a
// local address is delivered whatever the device's carrier, as the pods'
// gateway on the weft bridge is. A restart finds the device as it left it
// and changes nothing. Leaving (`weft reset`) deletes the device.

import (
	"net/netip"
)

// localLink is the kernel seam of the node-local DNS address. Both methods
// work in the calling thread's network namespace and may be called from
// any goroutine, one at a time.
type localLink interface {
	// Ensure makes name a dummy device (a bridge without ports where the
	// kernel has no dummy driver) that is up and holds addr and no other
	// address of its family (link-local IPv6 aside), and reports whether
	// it changed anything. Idempotent.
	Ensure(name string, addr netip.Prefix) (changed bool, err error)
	// Delete removes the device; a missing device is not an error.
	Delete(name string) error
}

// RemoveDNSLocalLink deletes the node-local DNS device name (`weft
// reset`); a missing device is not an error.
func RemoveDNSLocalLink(name string) error { return hostLocalLink{}.Delete(name) }

// syncDNSLocal puts the node-local DNS address on its device. It runs at
// every sync pass, so a device removed by hand comes back; a failure is
// logged once per distinct error (the DNS server keeps retrying the bind
// meanwhile).
func (d *Daemon) syncDNSLocal() {
	a := d.cfg.DNSLocalAddress
	if !a.IsValid() || d.dns == nil {
		return
	}
	changed, err := d.local.Ensure(d.cfg.DNSLocalIface, netip.PrefixFrom(a, a.BitLen()))
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	d.mu.Lock()
	report := msg != d.dnsLocalErr
	d.dnsLocalErr = msg
	d.mu.Unlock()
	switch {
	case err != nil && report:
		d.log.Warn("node-local DNS address", "iface", d.cfg.DNSLocalIface, "addr", a, "err", err)
	case err == nil && changed:
		d.log.Info("node-local DNS address set", "iface", d.cfg.DNSLocalIface, "addr", a)
	}
}
