package ipam

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/weftmesh/weft/peer"
)

// BridgeID is the allocation ID of the bridge's address; GC never
// releases it.
const BridgeID = "weft:bridge"

// maxNameLen bounds an allocation's name (a DNS name is at most 253).
const maxNameLen = 255

// Allocate returns the address for id, allocating one from this peer's
// space if id has none. The same id always gets the same address. It
// blocks while the ring awaits consensus or a donation is under way, until
// ctx is done; it returns ErrNoSpace when no live peer has space to give.
func (a *Allocator) Allocate(ctx context.Context, id string) (netip.Prefix, error) {
	return a.AllocateNamed(ctx, id, "")
}

// maxDonorTries is how many unanswered donation requests make a donor
// count as refusing for the rest of one Allocate call.
const maxDonorTries = 3

// AllocateNamed is Allocate that also stores name with the allocation, in
// the same transaction (the pod's DNS name: the allocation and the name
// live and die together). An existing allocation keeps its address and
// takes the name if it is not empty.
func (a *Allocator) AllocateNamed(ctx context.Context, id, name string) (netip.Prefix, error) {
	if id == "" {
		return netip.Prefix{}, fmt.Errorf("allocate: %w", ErrEmptyID)
	}
	if len(name) > maxNameLen {
		return netip.Prefix{}, fmt.Errorf("allocate %q: name of %d bytes: %w", id, len(name), ErrBadConfig)
	}
	refused := map[peer.ID]bool{} // donors that failed us during this call
	timeouts := map[peer.ID]int{} // unanswered requests per donor
	var pending peer.ID           // donor asked, reply awaited
	var pendingCh chan *message
	var pendingReq uint64
	var deadline <-chan time.Time
	defer func() {
		if pendingReq != 0 {
			a.mu.Lock()
			a.reqs.drop(pendingReq)
			a.mu.Unlock()
		}
	}()
	for {
		a.mu.Lock()
		if a.closed {
			a.mu.Unlock()
			return netip.Prefix{}, fmt.Errorf("allocate %q: %w", id, ErrClosed)
		}
		if off, ok := a.allocs.byID[id]; ok {
			err := a.renameLocked(id, off, name)
			a.mu.Unlock()
			if err != nil {
				return netip.Prefix{}, fmt.Errorf("allocate %q: %w", id, err)
			}
			return a.addr(off), nil
		}
		if a.handoff.leaving {
			a.mu.Unlock()
			return netip.Prefix{}, fmt.Errorf("allocate %q: %w", id, ErrLeaving)
		}
		wake := a.wake
		if a.ring.Ready() {
			if off, ok := a.findFreeLocked(); ok {
				err := a.allocateLocked(id, off, name)
				a.mu.Unlock()
				if err != nil {
					return netip.Prefix{}, fmt.Errorf("allocate %q: %w", id, err)
				}
				return a.addr(off), nil
			}
			if pending == 0 {
				donor := a.pickDonorLocked(refused)
				if donor == 0 {
					a.mu.Unlock()
					return netip.Prefix{}, fmt.Errorf("allocate %q: %w", id, ErrNoSpace)
				}
				if pendingReq != 0 {
					a.reqs.drop(pendingReq)
				}
				pending = donor
				pendingReq, pendingCh = a.reqs.add()
				a.sendLocked(donor, &message{Kind: kindDonateReq, ReqID: pendingReq})
				deadline = time.After(a.cfg.RequestTimeout)
				a.log.Debug("asking for space", "donor", donor)
			}
		}
		a.mu.Unlock()
		select {
		case <-ctx.Done():
			return netip.Prefix{}, fmt.Errorf("allocate %q: %w", id, ctx.Err())
		case <-wake:
		case r := <-pendingCh:
			a.log.Debug("donation reply", "donor", pending, "ok", r.Flags&flagOK != 0)
			if r.Flags&flagOK == 0 {
				refused[pending] = true
			}
			pending, pendingCh = 0, nil
		case <-deadline:
			// No answer is not a no: the request or its reply may have
			// been lost. Ask that donor again, up to maxDonorTries times.
			a.log.Debug("donation request unanswered", "donor", pending)
			if timeouts[pending]++; timeouts[pending] >= maxDonorTries {
				refused[pending] = true
			}
			pending, pendingCh, deadline = 0, nil, nil
		}
	}
}

// allocations are this peer's allocations: container IDs, their
// addresses (as offsets into the range) and their names. Guarded by
// Allocator.mu.
//
// byID and byOff are inverse maps: one address per ID, one ID per
// address. names holds a non-empty name for some IDs of byID, none other.
// After every successful store commit the three equal the store's allocs
// bucket: callers change them together with the batch that persists the
// change and undo the change when the commit fails. Every offset lies in a
// run the ring gives this peer (see Allocator.ring). cursor is only a
// hint: the offset after the last allocation, where findFreeLocked starts.
type allocations struct {
	byID   map[string]uint32 // allocation id -> offset
	byOff  map[uint32]string // offset -> allocation id
	names  map[string]string // allocation id -> name
	cursor uint32
}

// newAllocations indexes persisted allocations (byID and names as the
// store loaded them).
func newAllocations(byID map[string]uint32, names map[string]string) allocations {
	s := allocations{byID: byID, byOff: make(map[uint32]string, len(byID)), names: names}
	for id, off := range byID {
		s.byOff[off] = id
	}
	return s
}

// put records id at off, with name if it is not empty.
func (s *allocations) put(id string, off uint32, name string) {
	s.byID[id], s.byOff[off] = off, id
	if name != "" {
		s.names[id] = name
	}
}

// drop forgets id and returns what it held.
func (s *allocations) drop(id string) (off uint32, name string, ok bool) {
	off, ok = s.byID[id]
	if !ok {
		return 0, "", false
	}
	name = s.names[id]
	delete(s.byID, id)
	delete(s.byOff, off)
	delete(s.names, id)
	return off, name, true
}

// reset forgets every allocation (Handoff).
func (s *allocations) reset() {
	s.byID, s.byOff, s.names = map[string]uint32{}, map[uint32]string{}, map[string]string{}
}

// perToken counts the allocations in each run of r, by token index.
func (s *allocations) perToken(r *Ring) map[int]uint32 {
	n := map[int]uint32{}
	for off := range s.byOff {
		n[r.index(off)]++
	}
	return n
}

// sortedOffsets returns the allocated offsets in increasing order.
func (s *allocations) sortedOffsets() []uint32 {
	offs := make([]uint32, 0, len(s.byOff))
	for off := range s.byOff {
		offs = append(offs, off)
	}
	slices.Sort(offs)
	return offs
}

// list returns the allocations sorted by ID, with addresses from addr.
func (s *allocations) list(addr func(uint32) netip.Prefix) []Allocation {
	out := make([]Allocation, 0, len(s.byID))
	for id, off := range s.byID {
		out = append(out, Allocation{ID: id, Addr: addr(off), Name: s.names[id]})
	}
	slices.SortFunc(out, func(x, y Allocation) int { return strings.Compare(x.ID, y.ID) })
	return out
}

// allocateLocked records id (and its name, if any) at off and updates the
// run's free count, all in one transaction.
func (a *Allocator) allocateLocked(id string, off uint32, name string) error {
	i := a.ring.index(off)
	t := &a.ring.Tokens[i]
	old := *t
	t.Free = max(t.Free, 1) - 1
	t.Version++
	a.allocs.put(id, off, name)
	b := &batch{tokens: []Token{*t}, put: map[string]uint32{id: off}}
	if name != "" {
		b.names = map[string]string{id: name}
	}
	if err := a.commitLocked(b, []Token{*t}); err != nil {
		*t = old
		a.allocs.drop(id)
		return err
	}
	a.allocs.cursor = off + 1
	return nil
}

// renameLocked gives the existing allocation id at off the name, unless
// name is empty or already its name.
func (a *Allocator) renameLocked(id string, off uint32, name string) error {
	if name == "" || a.allocs.names[id] == name {
		return nil
	}
	b := &batch{put: map[string]uint32{id: off}, names: map[string]string{id: name}}
	if err := a.commitLocked(b, nil); err != nil {
		return err
	}
	a.allocs.names[id] = name
	return nil
}

// pickDonorLocked returns, at random, one of the live peers advertising
// at least three quarters of the most free space any advertises, refused
// ones skipped; 0 if none has any.
//
// Why not the one with the most: when dozens of peers join at once they
// all ask it, and it answers one request at a time (each donation is a
// synced commit, 200-400 ms on a loaded host), halving its space for each:
// in a mass start of 40 peers one donor took 15 requests, the last ones
// waited past RequestTimeout (asking again elsewhere) and got a /31. The
// free counts of peers with equal shares differ by their allocations and
// the range's reserved addresses, so "the most" is nearly always a single
// peer. Within a quarter of the most are the peers with the largest share
// and few allocations: shares are CIDR blocks (donate.go), and a block of
// half the size has at most half its free addresses. Spread over them,
// the donations form a tree, and a peer joining alone still splits a
// largest share (balance_test.go's bound of 2).
func (a *Allocator) pickDonorLocked(refused map[peer.ID]bool) peer.ID {
	free := map[peer.ID]uint64{}
	for _, t := range a.ring.Tokens {
		free[t.Owner] += uint64(t.Free)
	}
	var most uint64
	for id, f := range free {
		if id == a.cfg.Self || refused[id] || !a.aliveLocked(id) {
			continue
		}
		most = max(most, f)
	}
	if most == 0 {
		return 0
	}
	var cands []peer.ID
	for id, f := range free {
		if id != a.cfg.Self && !refused[id] && a.aliveLocked(id) && 4*f >= 3*most {
			cands = append(cands, id)
		}
	}
	sortIDs(cands)
	return cands[rand.IntN(len(cands))]
}

// Lookup returns the address allocated to id.
func (a *Allocator) Lookup(id string) (netip.Prefix, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	off, ok := a.allocs.byID[id]
	if !ok {
		return netip.Prefix{}, false
	}
	return a.addr(off), true
}

// Release frees id's address. Releasing an unknown id succeeds.
func (a *Allocator) Release(id string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return fmt.Errorf("release %q: %w", id, ErrClosed)
	}
	if err := a.releaseLocked([]string{id}); err != nil {
		return fmt.Errorf("release %q: %w", id, err)
	}
	return nil
}

func (a *Allocator) releaseLocked(ids []string) error {
	var gone []string
	for _, id := range ids {
		if _, ok := a.allocs.byID[id]; ok {
			gone = append(gone, id)
		}
	}
	if len(gone) == 0 {
		return nil
	}
	type undo struct {
		id, name string
		off      uint32
	}
	var saved []undo
	for _, id := range gone {
		if off, name, ok := a.allocs.drop(id); ok {
			saved = append(saved, undo{id: id, name: name, off: off})
		}
	}
	oldRing := a.ring.Clone()
	own := a.refreshFreeLocked()
	if err := a.commitLocked(&batch{del: gone, tokens: own}, own); err != nil {
		a.ring = oldRing
		for _, s := range saved {
			a.allocs.put(s.id, s.off, s.name)
		}
		return err
	}
	return nil
}

// GC releases every allocation of this peer whose id is not in keep, except
// the bridge's, and returns the released ids.
func (a *Allocator) GC(keep []string) ([]string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil, fmt.Errorf("gc: %w", ErrClosed)
	}
	k := map[string]bool{BridgeID: true}
	for _, id := range keep {
		k[id] = true
	}
	var gone []string
	for id := range a.allocs.byID {
		if !k[id] {
			gone = append(gone, id)
		}
	}
	if err := a.releaseLocked(gone); err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	return gone, nil
}
