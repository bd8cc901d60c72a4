package ipam

// Two small additions for a second ring beside the pod ring (the underlay
// pool of macvlan pods, see daemon/underlay.go), useful to the first one
// too:
//
//   - Rekey moves an allocation to another ID, keeping its address, in one
//     store transaction. The underlay pool allocates an address to the pod,
//     probes the LAN for it (ARP), and when a machine answers, rekeys the
//     address to a reserved ID ("weft:taken:ADDR"): the address stays
//     allocated in the ring's allocation state, persisted and counted in
//     the run's free count, so no pod of any peer ever gets it, and status
//     lists it.
//   - Refused remembers the peers whose messages carried another range than
//     ours (ErrDifferentRing), so that status can name them: peers launched
//     with different ranges refuse each other's ring, and the operator
//     reads why.

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/weftmesh/weft/peer"
)

// Rekey moves the allocation of id to newID, with name (empty = none),
// keeping its address. It fails with ErrUnknownID when id has no
// allocation and ErrIDTaken when newID has one already.
func (a *Allocator) Rekey(id, newID, name string) error {
	if newID == "" {
		return fmt.Errorf("rekey %q: %w", id, ErrEmptyID)
	}
	if len(name) > maxNameLen {
		return fmt.Errorf("rekey %q: name of %d bytes: %w", id, len(name), ErrBadConfig)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return fmt.Errorf("rekey %q: %w", id, ErrClosed)
	}
	off, ok := a.allocs.byID[id]
	if !ok {
		return fmt.Errorf("rekey %q: %w", id, ErrUnknownID)
	}
	if _, ok := a.allocs.byID[newID]; ok {
		return fmt.Errorf("rekey %q to %q: %w", id, newID, ErrIDTaken)
	}
	b := &batch{del: []string{id}, put: map[string]uint32{newID: off}}
	if name != "" {
		b.names = map[string]string{newID: name}
	}
	if err := a.commitLocked(b, nil); err != nil {
		return fmt.Errorf("rekey %q: %w", id, err)
	}
	a.allocs.drop(id)
	a.allocs.put(newID, off, name)
	return nil
}

// Refusal is a peer whose ring messages this allocator refused because
// they carry another range.
type Refusal struct {
	Peer  peer.ID
	Range netip.Prefix // the peer's range
	Last  time.Time    // the last refused message
}

// refusalTTL is how long a refusal is reported after the last refused
// message: the peers re-broadcast their tokens every few seconds, so a
// peer relaunched with the right range drops out of the list soon.
const refusalTTL = time.Minute

// noteRange records whether from's message carried our range.
func (a *Allocator) noteRange(from peer.ID, rng netip.Prefix) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if rng == a.cfg.Range {
		delete(a.refused, from)
		return
	}
	if a.refused == nil {
		a.refused = map[peer.ID]Refusal{}
	}
	a.refused[from] = Refusal{Peer: from, Range: rng, Last: time.Now()}
}

// Refused lists the peers whose messages carried another range in the
// last minute, sorted by peer ID.
func (a *Allocator) Refused() []Refusal {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []Refusal
	for id, r := range a.refused {
		if time.Since(r.Last) > refusalTTL {
			delete(a.refused, id)
			continue
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(x, y Refusal) int {
		switch {
		case x.Peer < y.Peer:
			return -1
		case x.Peer > y.Peer:
			return 1
		}
		return 0
	})
	return out
}
