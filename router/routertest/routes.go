package routertest

import (
	"net/netip"

	"github.com/weftmesh/weft/router"
)

// routeTable holds the fake kernel's routes, one per destination. The
// scale simulator runs a thousand peers, each with a route to every other
// peer's ranges, in one process: a route as router.Route in a map keyed by
// its prefix costs ~230 bytes, so the table was a fifth of the simulator's
// heap at 1,000 peers. An IPv4 route whose addresses are all IPv4 (every
// route weft plans for an IPv4 range) is kept in 12 bytes under an 8-byte
// key; any other route as it is.
type routeTable struct {
	v4    map[uint64]route4
	other map[netip.Prefix]router.Route
	devs  []string // route4.dev indexes this
	devIx map[string]uint16
}

// route4 is an IPv4 route without its destination (the key).
type route4 struct {
	gw, src uint32
	dev     uint16
	flags   uint8
}

const (
	r4Gw = 1 << iota
	r4Src
	r4OnLink
	r4Unreachable
)

func newRouteTable() *routeTable {
	return &routeTable{v4: map[uint64]route4{}, other: map[netip.Prefix]router.Route{}, devIx: map[string]uint16{}}
}

func key4(p netip.Prefix) (uint64, bool) {
	if !p.Addr().Is4() {
		return 0, false
	}
	a := p.Addr().As4()
	return uint64(a[0])<<40 | uint64(a[1])<<32 | uint64(a[2])<<24 | uint64(a[3])<<16 | uint64(p.Bits()), true
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func addr4(u uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(u >> 24), byte(u >> 16), byte(u >> 8), byte(u)})
}

// compact returns r's short form, if it has one.
func (t *routeTable) compact(r router.Route) (uint64, route4, bool) {
	k, ok := key4(r.Dst)
	if !ok || (r.Gw.IsValid() && !r.Gw.Is4()) || (r.Src.IsValid() && !r.Src.Is4()) {
		return 0, route4{}, false
	}
	ix, ok := t.devIx[r.Dev]
	if !ok {
		if len(t.devs) == 1<<16-1 {
			return 0, route4{}, false
		}
		ix = uint16(len(t.devs))
		t.devs = append(t.devs, r.Dev)
		t.devIx[r.Dev] = ix
	}
	c := route4{dev: ix}
	if r.Gw.IsValid() {
		c.gw, c.flags = u32(r.Gw), c.flags|r4Gw
	}
	if r.Src.IsValid() {
		c.src, c.flags = u32(r.Src), c.flags|r4Src
	}
	if r.OnLink {
		c.flags |= r4OnLink
	}
	if r.Unreachable {
		c.flags |= r4Unreachable
	}
	return k, c, true
}

func (t *routeTable) expand(k uint64, c route4) router.Route {
	r := router.Route{
		Dst:         netip.PrefixFrom(addr4(uint32(k>>16)), int(k&0xff)),
		Dev:         t.devs[c.dev],
		OnLink:      c.flags&r4OnLink != 0,
		Unreachable: c.flags&r4Unreachable != 0,
	}
	if c.flags&r4Gw != 0 {
		r.Gw = addr4(c.gw)
	}
	if c.flags&r4Src != 0 {
		r.Src = addr4(c.src)
	}
	return r
}

// set replaces the route to r.Dst with r.
func (t *routeTable) set(r router.Route) {
	t.delete(r.Dst)
	if k, c, ok := t.compact(r); ok {
		t.v4[k] = c
		return
	}
	t.other[r.Dst] = r
}

func (t *routeTable) delete(dst netip.Prefix) {
	if k, ok := key4(dst); ok {
		delete(t.v4, k)
	}
	delete(t.other, dst)
}

func (t *routeTable) len() int { return len(t.v4) + len(t.other) }

// all returns every route, in no order.
func (t *routeTable) all() []router.Route {
	out := make([]router.Route, 0, t.len())
	for k, c := range t.v4 {
		out = append(out, t.expand(k, c))
	}
	for _, r := range t.other {
		out = append(out, r)
	}
	return out
}

// deleteDev removes every route through dev.
func (t *routeTable) deleteDev(dev string) {
	for _, r := range t.all() {
		if r.Dev == dev {
			t.delete(r.Dst)
		}
	}
}
