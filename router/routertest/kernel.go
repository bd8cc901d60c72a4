// Package routertest provides in-memory fakes of the router's seams: a
// Kernel that keeps state and records every mutating operation as one text
// line, and a WireGuard device that records Configure calls.
//
//	k := routertest.NewKernel()
//	k.SetUnderlay(netip.MustParseAddr("192.168.1.10"), routertest.Underlay("eth0", 1500, "192.168.1.10/24"))
//	w := routertest.NewWG(k)
//	r, _ := router.New(router.Options{Kernel: k, WireGuard: w.Factory()})
//	_ = r.Set(cfg)
//	lines := k.Take() // "route replace 10.40.0.0/14 dev weft-wg src 10.32.0.1", ...
package routertest

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/weftmesh/weft/router"
)

// Kernel is a stateful fake router.Kernel. Reads never record; each
// mutating call appends one line to the transcript. Safe for concurrent use.
type Kernel struct {
	mu         sync.Mutex // guards following
	lines      []string
	links      map[string]router.Link
	addrs      map[string][]netip.Prefix
	routes     *routeTable
	neighs     map[string]router.Neigh // by dev+ip
	fdbs       map[string]router.FDB   // by dev+mac
	sysctls    map[string]string
	nft        netip.Prefix
	underlays  map[netip.Addr]router.Underlay
	failRoutes error // returned by RouteReplace when set
	listed     int   // routes, neighbours and FDB entries returned by the List calls
	quiet      bool  // record no transcript (Quiet)
}

var _ router.Kernel = (*Kernel)(nil)

// NewKernel returns an empty fake kernel.
func NewKernel() *Kernel {
	return &Kernel{links: map[string]router.Link{}, addrs: map[string][]netip.Prefix{},
		routes: newRouteTable(), neighs: map[string]router.Neigh{},
		fdbs: map[string]router.FDB{}, sysctls: map[string]string{}, underlays: map[netip.Addr]router.Underlay{}}
}

// Underlay builds an underlay description.
func Underlay(dev string, mtu int, prefix string) router.Underlay {
	return router.Underlay{Dev: dev, MTU: mtu, Prefix: netip.MustParsePrefix(prefix)}
}

// SetUnderlay declares the device holding addr (and creates that link).
func (k *Kernel) SetUnderlay(addr netip.Addr, u router.Underlay) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.underlays[addr] = u
	k.links[u.Dev] = router.Link{Name: u.Dev, Kind: "veth", MTU: u.MTU, Up: true}
}

// AddLink makes a link exist without a transcript line (a device created
// elsewhere, e.g. by the WireGuard fake).
func (k *Kernel) AddLink(l router.Link) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.links[l.Name] = l
}

// FailRouteReplace makes RouteReplace fail with err (nil = succeed).
func (k *Kernel) FailRouteReplace(err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.failRoutes = err
}

// Take returns the lines recorded since the last Take and forgets them.
func (k *Kernel) Take() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	l := k.lines
	k.lines = nil
	return l
}

// TakeListed returns how many routes, neighbours and FDB entries the List
// calls returned since the last TakeListed: the reads that grow with the
// number of peers.
func (k *Kernel) TakeListed() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	n := k.listed
	k.listed = 0
	return n
}

// Routes returns the current routes, sorted, as text.
func (k *Kernel) Routes() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for _, r := range k.routes.all() {
		out = append(out, r.String())
	}
	slices.Sort(out)
	return out
}

// Dump returns the whole state, sorted, as text: links, addresses,
// routes, neighbours, FDB entries, sysctls and the masquerade. Two kernels
// with equal dumps hold the same datapath.
func (k *Kernel) Dump() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for _, l := range k.links {
		out = append(out, fmt.Sprintf("link %s kind %s parent %s mtu %d up %v mac %v vxlan %+v", l.Name, l.Kind, l.Parent, l.MTU, l.Up, l.HardwareAddr, l.VXLAN))
	}
	for dev, as := range k.addrs {
		for _, a := range as {
			out = append(out, fmt.Sprintf("addr %v dev %s", a, dev))
		}
	}
	for _, r := range k.routes.all() {
		out = append(out, "route "+r.String())
	}
	for _, n := range k.neighs {
		out = append(out, "neigh "+n.String())
	}
	for _, f := range k.fdbs {
		out = append(out, "fdb "+f.String())
	}
	for key, v := range k.sysctls {
		out = append(out, fmt.Sprintf("sysctl %s=%s", key, v))
	}
	out = append(out, fmt.Sprintf("nft %v", k.nft))
	slices.Sort(out)
	return out
}

// DeleteRouteByHand removes a route without a transcript line (drift).
func (k *Kernel) DeleteRouteByHand(dst netip.Prefix) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.routes.delete(dst)
}

// DeleteNeighByHand removes a neighbour without a transcript line (drift).
func (k *Kernel) DeleteNeighByHand(dev string, ip netip.Addr) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.neighs, dev+" "+ip.String())
}

func (k *Kernel) record(format string, args ...any) {
	if k.quiet {
		return
	}
	k.lines = append(k.lines, fmt.Sprintf(format, args...))
}

// Quiet stops recording the transcript (Take then returns nothing); the
// state is kept as before. A simulator of hundreds of peers reads only the
// state: the lines cost it a formatted string per change, and memory until
// a Take.
func (k *Kernel) Quiet() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.quiet, k.lines = true, nil
}

func (k *Kernel) LinkGet(name string) (router.Link, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	l, ok := k.links[name]
	if !ok {
		return router.Link{}, fmt.Errorf("link %s: %w", name, router.ErrNotFound)
	}
	return l, nil
}

func (k *Kernel) LinkEnsure(l router.Link) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	have, ok := k.links[l.Name]
	if !ok && l.Kind == "" {
		return fmt.Errorf("link %s: %w", l.Name, router.ErrNotFound)
	}
	if l.Kind == "" {
		l.Kind, l.HardwareAddr = have.Kind, have.HardwareAddr
	}
	k.links[l.Name] = l
	k.record("link ensure %v", l)
	return nil
}

func (k *Kernel) LinkDelete(name string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.links[name]; !ok {
		return nil
	}
	delete(k.links, name)
	delete(k.addrs, name)
	k.routes.deleteDev(name) // the kernel drops routes through a deleted device
	for key, n := range k.neighs {
		if n.Dev == name {
			delete(k.neighs, key)
		}
	}
	for key, f := range k.fdbs {
		if f.Dev == name {
			delete(k.fdbs, key)
		}
	}
	k.record("link delete %s", name)
	return nil
}

func (k *Kernel) AddrList(dev string) ([]netip.Prefix, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.links[dev]; !ok {
		return nil, fmt.Errorf("link %s: %w", dev, router.ErrNotFound)
	}
	return slices.Clone(k.addrs[dev]), nil
}

func (k *Kernel) AddrEnsure(dev string, a netip.Prefix) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !slices.Contains(k.addrs[dev], a) {
		k.addrs[dev] = append(k.addrs[dev], a)
	}
	k.record("addr add %v dev %s noprefixroute", a, dev)
	return nil
}

func (k *Kernel) AddrDelete(dev string, a netip.Prefix) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.addrs[dev] = slices.DeleteFunc(k.addrs[dev], func(x netip.Prefix) bool { return x == a })
	k.record("addr delete %v dev %s", a, dev)
	return nil
}

func (k *Kernel) RouteList() ([]router.Route, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := k.routes.all()
	k.listed += len(out)
	return out, nil
}

func (k *Kernel) RouteReplace(r router.Route) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.failRoutes != nil {
		return k.failRoutes
	}
	if _, ok := k.links[r.Dev]; r.Dev != "" && !ok {
		return fmt.Errorf("route %v: link %s: %w", r, r.Dev, router.ErrNotFound)
	}
	if r.Unreachable { // as the kernel reports it: no device, gateway or source
		r = router.Route{Dst: r.Dst, Unreachable: true}
	}
	k.routes.set(r)
	k.record("route replace %v", r)
	return nil
}

func (k *Kernel) RouteDelete(r router.Route) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.routes.delete(r.Dst)
	k.record("route delete %v", r)
	return nil
}

func (k *Kernel) NeighList(dev string) ([]router.Neigh, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []router.Neigh
	for _, n := range k.neighs {
		if n.Dev == dev {
			out = append(out, n)
		}
	}
	k.listed += len(out)
	return out, nil
}

func (k *Kernel) NeighSet(n router.Neigh) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.neighs[n.Dev+" "+n.IP.String()] = n
	k.record("neigh replace %v", n)
	return nil
}

func (k *Kernel) NeighDelete(n router.Neigh) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.neighs, n.Dev+" "+n.IP.String())
	k.record("neigh delete %v", n)
	return nil
}

func (k *Kernel) FDBList(dev string) ([]router.FDB, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []router.FDB
	for _, f := range k.fdbs {
		if f.Dev == dev {
			out = append(out, f)
		}
	}
	k.listed += len(out)
	return out, nil
}

func (k *Kernel) FDBSet(f router.FDB) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.fdbs[f.Dev+" "+f.MAC.String()] = f
	k.record("fdb replace %v", f)
	return nil
}

func (k *Kernel) FDBDelete(f router.FDB) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.fdbs, f.Dev+" "+f.MAC.String())
	k.record("fdb delete %v", f)
	return nil
}

func (k *Kernel) SysctlGet(key string) (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.sysctls[key], nil
}

func (k *Kernel) SysctlSet(key, value string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.sysctls[key] = value
	k.record("sysctl %s=%s", key, value)
	return nil
}

func (k *Kernel) NftGet() (netip.Prefix, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.nft, nil
}

func (k *Kernel) NftSet(rng netip.Prefix) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.nft = rng
	k.record("nft table ip weft: masquerade saddr %v daddr != %v", rng, rng)
	return nil
}

func (k *Kernel) NftDelete() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.nft.IsValid() {
		return nil
	}
	k.nft = netip.Prefix{}
	k.record("nft delete table ip weft")
	return nil
}

func (k *Kernel) Underlay(addr netip.Addr) (router.Underlay, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	u, ok := k.underlays[addr]
	if !ok {
		return router.Underlay{}, fmt.Errorf("underlay %v: %w", addr, router.ErrNotFound)
	}
	return u, nil
}
