package ipam

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/weftmesh/weft/peer"
)

// Status is a snapshot for `weft status ipam`; the top-level counts are
// this peer's.
type Status struct {
	Range       netip.Prefix
	Status      string // "ready" or "awaiting consensus (known k of quorum q)"
	Owned       int64  // addresses this peer owns
	Free        int64  // of those, free to allocate
	Allocated   int64  // this peer's allocations, the bridge's included
	Owners      []OwnerStatus
	Runs        []RunStatus  // the ring in address order
	Allocations []Allocation // sorted by ID
	// Changed is when the ring or ownership last changed as this peer
	// knows it (zero: not since it opened).
	Changed time.Time
}

// OwnerStatus summarises one owner's share of the ring.
type OwnerStatus struct {
	ID        peer.ID
	Name      string
	Owned     int64
	Share     float64 // Owned / size of the range
	Free      int64   // as advertised
	Reachable bool    // alive in the last SetPeers (always true for self)
}

// RunStatus is one run of the ring, [Start, End] inclusive.
type RunStatus struct {
	Start, End netip.Addr
	Size       int64
	Owner      peer.ID
	OwnerName  string
	Free       int64
	Reachable  bool
}

// Allocation is one container's address.
type Allocation struct {
	ID   string
	Addr netip.Prefix
	Name string // the name given with the allocation (a pod's DNS name), if any
}

// Status returns a snapshot of the ring and this peer's allocations.
func (a *Allocator) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := Status{Range: a.cfg.Range, Status: a.statusLocked(), Allocated: int64(len(a.allocs.byID)), Changed: a.changedAt}
	owners := map[peer.ID]*OwnerStatus{}
	for i, t := range a.ring.Tokens {
		size := int64(a.ring.end(i) - uint64(t.Start))
		o := owners[t.Owner]
		if o == nil {
			o = &OwnerStatus{ID: t.Owner, Name: a.nameLocked(t.Owner), Reachable: a.aliveLocked(t.Owner)}
			owners[t.Owner] = o
		}
		o.Owned += size
		o.Free += int64(t.Free)
		if t.Owner == a.cfg.Self {
			s.Owned += size
			s.Free += int64(t.Free)
		}
	}
	for _, o := range owners {
		o.Share = float64(o.Owned) / float64(a.ring.Size)
		s.Owners = append(s.Owners, *o)
	}
	slices.SortFunc(s.Owners, func(x, y OwnerStatus) int { return strings.Compare(x.Name+x.ID.String(), y.Name+y.ID.String()) })
	for _, r := range a.ring.Runs() {
		s.Runs = append(s.Runs, RunStatus{
			Start: a.addr(uint32(r.Start)).Addr(), End: a.addr(uint32(r.End - 1)).Addr(),
			Size: int64(r.End - r.Start), Owner: r.Owner, OwnerName: a.nameLocked(r.Owner),
			Free: int64(r.Free), Reachable: a.aliveLocked(r.Owner),
		})
	}
	if len(a.allocs.byID) > 0 { // else nil: JSON null, not []
		s.Allocations = a.allocs.list(a.addr)
	}
	return s
}

func (a *Allocator) nameLocked(id peer.ID) string {
	if p, ok := a.peers[id]; ok {
		return p.name
	}
	if id == a.cfg.Self {
		return a.cfg.Name
	}
	return ""
}

// Ranges returns the ring as CIDRs per owner: the routing table.
func (a *Allocator) Ranges() map[peer.ID][]netip.Prefix {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[peer.ID][]netip.Prefix{}
	for _, r := range a.ring.Runs() {
		for _, c := range cidrs(r.Start, r.End) {
			p := netip.PrefixFrom(a.addr(uint32(c[0])).Addr(), 32-int(c[1]))
			out[r.Owner] = append(out[r.Owner], p)
		}
	}
	return out
}

// Allocations returns this peer's allocations, sorted by ID.
func (a *Allocator) Allocations() []Allocation {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.allocs.list(a.addr)
}
