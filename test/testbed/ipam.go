package testbed

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"sync"

	"github.com/weftmesh/weft/api/client"
)

// IPAMStatus returns the host's `weft status ipam --json`.
func (h *Host) IPAMStatus() (*client.IPAMStatus, error) {
	out, stderr, err := h.Weft("status", "ipam", "--json")
	if err != nil {
		return nil, fmt.Errorf("weft status ipam on %s: %v: %s", h.Name, err, stderr)
	}
	var st client.IPAMStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("decode status ipam of %s: %v\n%s", h.Name, err, out)
	}
	return &st, nil
}

// Allocate allocates id on the host's peer over its unix socket and checks
// the answer is an address inside rng with rng's prefix length.
func (h *Host) Allocate(ctx context.Context, id string, rng netip.Prefix) (netip.Addr, error) {
	a, err := client.New(h.Socket).Allocate(ctx, client.AllocateRequest{ID: id})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("allocate %s on %s: %w", id, h.Name, err)
	}
	p, err := netip.ParsePrefix(a.Address)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("allocate %s on %s: address %q: %w", id, h.Name, a.Address, err)
	}
	if p.Bits() != rng.Bits() || !rng.Contains(p.Addr()) {
		return netip.Addr{}, fmt.Errorf("allocate %s on %s: %s is not inside %s with its prefix length", id, h.Name, p, rng)
	}
	return p.Addr(), nil
}

// Allocation is the address an ID got and the host that gave it.
type Allocation struct {
	Host string
	Addr netip.Addr
}

// Allocations are allocations by ID.
type Allocations map[string]Allocation

// Add adds every allocation of o.
func (a Allocations) Add(o Allocations) {
	for k, v := range o {
		a[k] = v
	}
}

// Duplicates describes every address held by two IDs (none: empty).
func (a Allocations) Duplicates() []string {
	by := map[netip.Addr]string{}
	var dups []string
	for id, x := range a {
		if other, ok := by[x.Addr]; ok {
			dups = append(dups, fmt.Sprintf("%s held by %s (on %s) and %s (on %s)", x.Addr, id, x.Host, other, a[other].Host))
		}
		by[x.Addr] = id
	}
	return dups
}

// AllocateMany allocates n IDs "PREFIX-HOST-i" on each host, with workers
// concurrent callers per host, all hosts at once. It returns what succeeded
// and every error.
func AllocateMany(ctx context.Context, hosts []*Host, prefix string, n, workers int, rng netip.Prefix) (Allocations, []error) {
	var (
		mu   sync.Mutex // guards following
		got  = Allocations{}
		errs []error
	)
	var wg sync.WaitGroup
	for _, h := range hosts {
		ids := make(chan string)
		for range workers {
			wg.Go(func() {
				for id := range ids {
					addr, err := h.Allocate(ctx, id, rng)
					mu.Lock()
					if err != nil {
						errs = append(errs, err)
					} else {
						got[id] = Allocation{h.Name, addr}
					}
					mu.Unlock()
				}
			})
		}
		wg.Go(func() {
			defer close(ids)
			for i := range n {
				ids <- fmt.Sprintf("%s-%s-%03d", prefix, h.Name, i)
			}
		})
	}
	wg.Wait()
	return got, errs
}

// RingKey is the part of one range of the ring every peer must agree on
// (the free counts are advertised and may lag).
type RingKey struct{ Start, End, Owner string }

// RingKeys returns the ring's ranges without their free counts.
func RingKeys(ranges []client.IPAMRange) []RingKey {
	var r []RingKey
	for _, g := range ranges {
		r = append(r, RingKey{g.Start, g.End, g.Owner})
	}
	return r
}

// CheckRingTiles reports whether ranges cover rng in address order, with no
// gap and no overlap.
func CheckRingTiles(rng netip.Prefix, ranges []client.IPAMRange) error {
	next := rng.Addr()
	var total int64
	for _, r := range ranges {
		s, err1 := netip.ParseAddr(r.Start)
		e, err2 := netip.ParseAddr(r.End)
		if err1 != nil || err2 != nil || s != next || e.Less(s) || !rng.Contains(e) {
			return fmt.Errorf("ring does not tile %s: range %s-%s after %s: %s", rng, r.Start, r.End, next, RangesString(ranges))
		}
		total += r.Size
		next = e.Next()
	}
	if total != 1<<(32-rng.Bits()) || rng.Contains(next) {
		return fmt.Errorf("ring covers %d addresses up to %s; want all of %s: %s", total, next, rng, RangesString(ranges))
	}
	return nil
}

// OwnerOf returns the owner ID of the range holding a ("" if none).
func OwnerOf(ranges []client.IPAMRange, a netip.Addr) string {
	for _, r := range ranges {
		s, _ := netip.ParseAddr(r.Start)
		e, _ := netip.ParseAddr(r.End)
		if s.Compare(a) <= 0 && a.Compare(e) <= 0 {
			return r.Owner
		}
	}
	return ""
}

// OwnedBy returns the ranges owned by the peer with ID id.
func OwnedBy(ranges []client.IPAMRange, id string) []client.IPAMRange {
	var out []client.IPAMRange
	for _, r := range ranges {
		if r.Owner == id {
			out = append(out, r)
		}
	}
	return out
}

// RangesString prints ranges compactly for messages.
func RangesString(ranges []client.IPAMRange) string {
	var b strings.Builder
	for _, r := range ranges {
		fmt.Fprintf(&b, "%s-%s(%s,free %d) ", r.Start, r.End, r.OwnerName, r.Free)
	}
	return b.String()
}

// DropHost forgets every allocation made on the named host (a dead peer's
// allocations die with it once its space is reclaimed).
func (a Allocations) DropHost(name string) {
	for id, x := range a {
		if x.Host == name {
			delete(a, id)
		}
	}
}
