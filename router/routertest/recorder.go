package routertest

import (
	"fmt"
	"net/netip"
	"sync"

	"github.com/weftmesh/weft/router"
)

// Recorder wraps a real router.Kernel and records its mutating calls as
// the same text lines as Kernel, so kernel tests can check that a repeated
// Set issues no mutation against the real kernel either.
type Recorder struct {
	router.Kernel

	mu    sync.Mutex // guards following
	lines []string
}

var _ router.Kernel = (*Recorder)(nil)

// NewRecorder wraps k.
func NewRecorder(k router.Kernel) *Recorder { return &Recorder{Kernel: k} }

// Take returns the lines recorded since the last Take and forgets them.
func (r *Recorder) Take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.lines
	r.lines = nil
	return l
}

func (r *Recorder) record(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, fmt.Sprintf(format, args...))
}

func (r *Recorder) LinkEnsure(l router.Link) error {
	r.record("link ensure %v", l)
	return r.Kernel.LinkEnsure(l)
}

func (r *Recorder) LinkDelete(name string) error {
	r.record("link delete %s", name)
	return r.Kernel.LinkDelete(name)
}

func (r *Recorder) AddrEnsure(dev string, a netip.Prefix) error {
	r.record("addr add %v dev %s noprefixroute", a, dev)
	return r.Kernel.AddrEnsure(dev, a)
}

func (r *Recorder) AddrDelete(dev string, a netip.Prefix) error {
	r.record("addr delete %v dev %s", a, dev)
	return r.Kernel.AddrDelete(dev, a)
}

func (r *Recorder) RouteReplace(rt router.Route) error {
	r.record("route replace %v", rt)
	return r.Kernel.RouteReplace(rt)
}

func (r *Recorder) RouteDelete(rt router.Route) error {
	r.record("route delete %v", rt)
	return r.Kernel.RouteDelete(rt)
}

func (r *Recorder) NeighSet(n router.Neigh) error {
	r.record("neigh replace %v", n)
	return r.Kernel.NeighSet(n)
}

func (r *Recorder) NeighDelete(n router.Neigh) error {
	r.record("neigh delete %v", n)
	return r.Kernel.NeighDelete(n)
}

func (r *Recorder) FDBSet(f router.FDB) error {
	r.record("fdb replace %v", f)
	return r.Kernel.FDBSet(f)
}

func (r *Recorder) FDBDelete(f router.FDB) error {
	r.record("fdb delete %v", f)
	return r.Kernel.FDBDelete(f)
}

func (r *Recorder) SysctlSet(key, value string) error {
	r.record("sysctl %s=%s", key, value)
	return r.Kernel.SysctlSet(key, value)
}

func (r *Recorder) NftSet(rng netip.Prefix) error {
	r.record("nft table ip weft: masquerade saddr %v daddr != %v", rng, rng)
	return r.Kernel.NftSet(rng)
}

func (r *Recorder) NftDelete() error {
	r.record("nft delete table ip weft")
	return r.Kernel.NftDelete()
}
