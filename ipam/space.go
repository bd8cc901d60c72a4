package ipam

// Space bookkeeping: which addresses of our runs are free, the free counts
// our tokens advertise, and applying ring changes (ours or merged) together
// with the store.

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"

	"github.com/weftmesh/weft/peer"
)

func sortIDs(ids []peer.ID) { slices.Sort(ids) }

// addr returns the address at offset off, with the range's prefix length.
func (a *Allocator) addr(off uint32) netip.Prefix {
	base := a.cfg.Range.Addr().As4()
	v := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	v += off
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), a.cfg.Range.Bits())
}

// reserved reports offsets never handed out: the network and broadcast
// addresses of the whole range.
func (a *Allocator) reserved(off uint64) bool { return off == 0 || off == a.ring.Size-1 }

// capacity is the number of allocatable addresses in [s, e), s < e: the
// reserved first and last addresses of the range do not count.
func (a *Allocator) capacity(s, e uint64) uint32 {
	n := e - s
	if s == 0 {
		n--
	}
	if e == a.ring.Size {
		n--
	}
	return uint32(n)
}

// refreshFreeLocked recomputes the free count of every token we own and
// bumps the version of those whose count changed. It returns them.
func (a *Allocator) refreshFreeLocked() []Token {
	used := a.allocs.perToken(&a.ring)
	var changed []Token
	for i := range a.ring.Tokens {
		t := &a.ring.Tokens[i]
		if t.Owner != a.cfg.Self {
			continue
		}
		c := a.capacity(uint64(t.Start), a.ring.end(i))
		free := c - min(c, used[i])
		if free != t.Free {
			t.Free = free
			t.Version++
			changed = append(changed, *t)
		}
	}
	return changed
}

// commitLocked persists b (plus the given changed tokens), marks the
// cached full state stale, broadcasts our own changed tokens and signals change.
// On a store error nothing in memory must have been changed by the caller
// yet, except what the caller rolls back.
func (a *Allocator) commitLocked(b *batch, broadcast []Token) error {
	if err := a.st.commit(b); err != nil {
		return err
	}
	a.staleLocked()
	a.broadcastLocked(broadcast)
	if b.owners || b.seed != 0 {
		a.changedLocked()
	} else {
		a.wakeLocked()
	}
	return nil
}

// mergeTokensLocked merges a ring message's tokens after checking that they
// do not take away space we hold allocations in, nor rewrite our own tokens
// at versions we never wrote. It returns the tokens that changed.
func (a *Allocator) mergeTokensLocked(from peer.ID, m *message) ([]Token, error) {
	if len(m.Tokens) == 0 {
		return nil, nil
	}
	if a.ring.Seed != 0 && m.Seed != a.ring.Seed {
		return nil, fmt.Errorf("seed %016x, ours %016x: %w", m.Seed, a.ring.Seed, ErrDifferentRing)
	}
	if !a.ring.Ready() && m.Tokens[0].Start != 0 {
		return nil, nil // a delta before we have a ring: push-pull brings the whole
	}
	if m.Seed == 0 {
		return nil, fmt.Errorf("tokens without seed: %w", ErrBadMessage)
	}
	changed := a.ring.newer(m.Tokens)
	if len(changed) == 0 {
		// Nothing to take: epidemic dissemination and repairs bring each
		// delta several times, and this costs no copy of the ring.
		return nil, nil
	}
	// What changes, judged on the ring as it is: whether owners or run
	// boundaries move (free counts then need a recount) and whether our own
	// space does (then the commit is synced).
	owners, ours := false, false
	for _, t := range changed {
		i := a.ring.index(t.Start)
		present := i >= 0 && a.ring.Tokens[i].Start == t.Start
		if present {
			if cur := a.ring.Tokens[i]; cur.Owner == a.cfg.Self && t.Owner == a.cfg.Self && t.Version > cur.Version {
				return nil, fmt.Errorf("token %s v%d, ours v%d: %w", a.addr(t.Start).Addr(), t.Version, cur.Version, ErrForgedOwnToken)
			}
		}
		owners = owners || !present || a.ring.Tokens[i].Owner != t.Owner ||
			t.Owner == a.cfg.Self // someone wrote one of our tokens (a reclaim on our behalf): recount
		// Our space changed: a token of ours (given to us, or written for
		// us), or one that starts inside a run of ours (our run shrinks:
		// a reclaim, a donation of ours echoed).
		ours = ours || t.Owner == a.cfg.Self || (a.ring.Ready() && a.ring.Owner(t.Start) == a.cfg.Self)
	}
	seed := a.ring.Seed
	a.ring.Seed = m.Seed
	undoApply := a.ring.apply(changed)
	undo := func() {
		undoApply()
		a.ring.Seed = seed
	}
	if !a.ring.Ready() {
		undo()
		return nil, fmt.Errorf("merged ring does not start at the range's start: %w", ErrBadMessage)
	}
	for id, off := range a.allocs.byID {
		if o := a.ring.Owner(off); o != a.cfg.Self {
			undo()
			return nil, fmt.Errorf("owner %s for %s, allocated to %q here: %w", o, a.addr(off).Addr(), id, ErrClaimOnAllocated)
		}
	}
	var own, before []Token
	if owners {
		// Only a change of owners or run boundaries can change our free
		// counts; others' free-count updates cannot.
		before = a.ring.ownedBy(a.cfg.Self)
		own = a.refreshFreeLocked()
	}
	// Only a change of our own space is synced: what we may allocate from
	// must survive a crash. Others' changes (their free counts, a donation
	// between two other peers) need no fsync: we never allocate from their
	// space, and if a crash loses them gossip brings them again. In a mass
	// join every peer merges every donation, and syncing each (two
	// fdatasyncs, on a disk shared by every peer of the host) held up the
	// ring channel behind the disk.
	b := &batch{tokens: mergeLists(changed, own), owners: owners, lazy: !ours}
	if seed == 0 {
		b.seed = m.Seed
	}
	if err := a.commitLocked(b, own); err != nil {
		for _, t := range before { // the free counts refreshFreeLocked wrote
			a.ring.Tokens[a.ring.index(t.Start)] = t
		}
		undo()
		return nil, err
	}
	a.log.Debug("ring merged", "from", from, "changed", len(changed))
	return changed, nil
}

// findFreeLocked returns a free offset in a run we own.
func (a *Allocator) findFreeLocked() (uint32, bool) {
	ts := a.ring.Tokens
	if len(ts) == 0 {
		return 0, false
	}
	// Start at the run holding the cursor so successive allocations do not
	// rescan the allocated prefix; wrap once around the ring.
	first := max(a.ring.index(a.allocs.cursor), 0)
	for k := 0; k <= len(ts); k++ {
		i := (first + k) % len(ts)
		t := ts[i]
		if t.Owner != a.cfg.Self || t.Free == 0 {
			continue
		}
		s, e := uint64(t.Start), a.ring.end(i)
		from := s
		if k == 0 && uint64(a.allocs.cursor) > s && uint64(a.allocs.cursor) < e {
			from = uint64(a.allocs.cursor)
		}
		for pass := 0; pass < 2; pass++ {
			for off := from; off < e; off++ {
				if a.reserved(off) {
					continue
				}
				if _, taken := a.allocs.byOff[uint32(off)]; !taken {
					return uint32(off), true
				}
			}
			e, from = from, s
		}
	}
	return 0, false
}

// freeSpans returns the maximal free spans [s, e) inside runs we own, the
// token index of each, largest first.
func (a *Allocator) freeSpansLocked() [][3]uint64 {
	var spans [][3]uint64
	offs := a.allocs.sortedOffsets()
	for i, t := range a.ring.Tokens {
		if t.Owner != a.cfg.Self {
			continue
		}
		s, e := uint64(t.Start), a.ring.end(i)
		if s == 0 {
			s = 1
		}
		if e == a.ring.Size {
			e--
		}
		j := sort.Search(len(offs), func(j int) bool { return uint64(offs[j]) >= s })
		cur := s
		for ; j < len(offs) && uint64(offs[j]) < e; j++ {
			if uint64(offs[j]) > cur {
				spans = append(spans, [3]uint64{cur, uint64(offs[j]), uint64(i)})
			}
			cur = uint64(offs[j]) + 1
		}
		if cur < e {
			spans = append(spans, [3]uint64{cur, e, uint64(i)})
		}
	}
	slices.SortStableFunc(spans, func(x, y [3]uint64) int {
		return int(int64(y[1]-y[0]) - int64(x[1]-x[0]))
	})
	return spans
}

// withBoundsLocked adds to ts (sorted) the ring's token that follows each
// of them, so that a recipient with a stale ring still learns where every
// run it is given ends: without it, a peer that missed the token ending a
// donated block would think its new run reaches into the next owner's.
func (a *Allocator) withBoundsLocked(ts []Token) []Token {
	var bounds []Token
	for _, t := range ts {
		if i := a.ring.index(t.Start); i >= 0 && i+1 < len(a.ring.Tokens) {
			bounds = append(bounds, a.ring.Tokens[i+1])
		}
	}
	return mergeLists(bounds, ts)
}
