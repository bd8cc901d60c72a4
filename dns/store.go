package dns

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/weftmesh/weft/peer"
)

// The record set's local operations and its gossip side: Add, Remove and
// RemoveContainer change only our own records and broadcast them as a
// delta; SyncOwned makes our records agree with our allocations; Merge
// applies what other peers send; SetPeers and SetOwners say whose records
// are visible. Every change drops the answer snapshot and the cached full
// state, which are rebuilt on next use.
//
// A name answers only while the allocation behind it exists. The owner of
// a pod's address keeps the pod's name with its allocation (the daemon
// stores both in the IPAM store, in one transaction) and SyncOwned turns
// that into records: a record of ours for a container that has no
// allocation any more, a copy that came back by gossip after a restart or
// a partition included, is replaced by a tombstone stamped later than any
// copy, so it loses everywhere. Records of a peer stay visible while the
// peer is up or still owns address space (its pods are routed and
// reachable while its host runs, even with its control plane down); they
// hide when neither holds, and are collected after DeadPeerTTL.

// deltaChunk bounds the records of one broadcast delta.
const deltaChunk = 64

// Add registers name -> addr for a container, owned by this peer. name is
// "web", "web.weft.local" or "web.weft.local.". Adding an existing record
// of the same container changes nothing.
func (s *Server) Add(name string, addr netip.Addr, containerID string) error {
	fqdn, err := canonicalName(name, s.cfg.Domain)
	if err != nil {
		return fmt.Errorf("dns add: %w", err)
	}
	addr = addr.Unmap()
	if !validAddr(addr) {
		return fmt.Errorf("dns add %s %s: %w", fqdn, addr, ErrBadAddr)
	}
	if !validContainerID(containerID) {
		return fmt.Errorf("dns add %s: container ID %q: %w", fqdn, containerID, ErrBadName)
	}
	s.mu.Lock()
	k := recordKey{owner: s.cfg.Self, name: fqdn, addr: addr}
	if cur, ok := s.set.recs[k]; ok && !cur.deleted && cur.container == containerID {
		s.mu.Unlock()
		return nil
	}
	now := time.Now()
	r := record{Owner: s.cfg.Self, Name: fqdn, Addr: addr, Container: containerID, Version: s.nextVersionLocked(now)}
	s.set.apply(r)
	s.changedLocked()
	s.mu.Unlock()
	s.broadcast([]record{r})
	return nil
}

// Remove deletes our records of name with address addr, or all of name's
// addresses when addr is the zero Addr. ErrNotFound when there was none.
func (s *Server) Remove(name string, addr netip.Addr) error {
	fqdn, err := canonicalName(name, s.cfg.Domain)
	if err != nil {
		return fmt.Errorf("dns remove: %w", err)
	}
	addr = addr.Unmap()
	n := s.tombstone(func(k recordKey, _ recordVal) bool {
		return k.name == fqdn && (!addr.IsValid() || k.addr == addr)
	})
	if n == 0 {
		return fmt.Errorf("dns remove %s %s: %w", fqdn, addr, ErrNotFound)
	}
	return nil
}

// RemoveContainer deletes all our records of a container. Removing a
// container that has none is not an error (CNI DEL is idempotent).
func (s *Server) RemoveContainer(containerID string) error {
	if containerID == "" {
		return fmt.Errorf("dns remove container: empty ID: %w", ErrBadName)
	}
	s.tombstone(func(_ recordKey, v recordVal) bool { return v.container == containerID })
	return nil
}

// tombstone replaces our live records that match with tombstones,
// broadcasts them and returns how many there were.
func (s *Server) tombstone(match func(recordKey, recordVal) bool) int {
	s.mu.Lock()
	now := time.Now()
	var dead []record
	for k, v := range s.set.recs {
		if k.owner == s.cfg.Self && !v.deleted && match(k, v) {
			dead = append(dead, record{Owner: k.owner, Name: k.name, Addr: k.addr, Container: v.container, Deleted: true})
		}
	}
	for i := range dead {
		dead[i].Version = s.nextVersionLocked(now)
		s.set.apply(dead[i])
	}
	if len(dead) > 0 {
		s.changedLocked()
	}
	s.mu.Unlock()
	s.broadcast(dead)
	return len(dead)
}

func (s *Server) broadcast(recs []record) {
	for len(recs) > 0 {
		n := min(len(recs), deltaChunk)
		s.tr.Broadcast(encodeRecords(kindDelta, recs[:n]))
		recs = recs[n:]
	}
}

// nextVersionLocked stamps a change of our records (hybrid clock).
func (s *Server) nextVersionLocked(now time.Time) uint64 {
	v := uint64(now.UnixNano())
	if v <= s.clock {
		v = s.clock + 1
	}
	s.clock = v
	return v
}

func (s *Server) changedLocked() {
	s.snap.Store(nil)
	s.full = nil
}

// zone returns the current answer snapshot, rebuilding it after a change.
func (s *Server) zone() *zone {
	if z := s.snap.Load(); z != nil {
		return z
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if z := s.snap.Load(); z != nil {
		return z
	}
	var visible []record
	for k, v := range s.set.recs {
		if !v.deleted && s.visibleLocked(k.owner) {
			visible = append(visible, record{Owner: k.owner, Name: k.name, Addr: k.addr})
		}
	}
	z := newZone(s.cfg.Domain, uint32(s.cfg.TTL/time.Second), s.cfg.Range, visible)
	s.snap.Store(z)
	return z
}

func (s *Server) visibleLocked(owner peer.ID) bool {
	return owner == s.cfg.Self || s.members == nil || s.members[owner] || s.owners[owner]
}

// Lookup returns the visible addresses of a name, sorted (IPv4 first).
func (s *Server) Lookup(name string) []netip.Addr {
	fqdn, err := canonicalName(name, s.cfg.Domain)
	if err != nil {
		return nil
	}
	nr := s.zone().byName[fqdn]
	if nr == nil || len(nr.v4)+len(nr.v6) == 0 {
		return nil
	}
	return append(slices.Clone(nr.v4), nr.v6...)
}

// Entries returns the visible records, sorted by name, address and owner.
func (s *Server) Entries() []Entry {
	s.mu.Lock()
	var out []Entry
	for k, v := range s.set.recs {
		if !v.deleted && s.visibleLocked(k.owner) {
			out = append(out, Entry{Name: k.name, Addr: k.addr, Owner: k.owner, ContainerID: v.container})
		}
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b Entry) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), a.Addr.Compare(b.Addr), cmp.Compare(a.Owner, b.Owner))
	})
	return out
}

// FullState returns the whole record set, tombstones included, encoded
// for gossip's push-pull. The caller must not modify it.
func (s *Server) FullState() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.full == nil {
		s.full = encodeRecords(kindFull, s.set.all())
	}
	return s.full
}

// Merge applies a delta or a full state that peer `from` originated. On
// error (bad input) the state is unchanged.
func (s *Server) Merge(from peer.ID, msg []byte) error {
	_, err := s.merge(from, msg)
	return err
}

// merge is Merge that reports whether the record set changed.
func (s *Server) merge(from peer.ID, msg []byte) (bool, error) {
	kind, recs, err := decodeRecords(msg)
	if err != nil {
		return false, fmt.Errorf("dns merge from %s: %w", from, err)
	}
	if kind == kindDelta {
		for _, r := range recs {
			if r.Owner != from {
				return false, fmt.Errorf("dns merge from %s: record of %s: %w", from, r.Owner, errForeignDelta)
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := false
	for _, r := range recs {
		if r.Owner == s.cfg.Self && r.Version > s.clock {
			s.clock = r.Version // our own records came back (we restarted): stamp later changes above them
		}
		if s.set.apply(r) {
			changed = true
		}
	}
	if changed {
		s.changedLocked()
	}
	return changed, nil
}

// SetPeers hands over the membership: the records of peers that are up
// are visible. Records of the others stay visible only while
// SetOwners lists them.
func (s *Server) SetPeers(peers []peer.Info) {
	members := make(map[peer.ID]bool, len(peers))
	for _, p := range peers {
		if p.State.Up() {
			members[p.ID] = true
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.members != nil && maps.Equal(members, s.members) {
		return
	}
	s.members = members
	s.visibilityChangedLocked()
}

// SetOwners hands over the peers that own address space in the ring: their
// records stay visible whatever gossip says of them, until their space is
// reclaimed or handed away.
func (s *Server) SetOwners(owners []peer.ID) {
	m := make(map[peer.ID]bool, len(owners))
	for _, id := range owners {
		m[id] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if maps.Equal(m, s.owners) {
		return
	}
	s.owners = m
	s.visibilityChangedLocked()
}

// visibilityChangedLocked restarts the clock of owners that became
// invisible (their records are collected DeadPeerTTL later) and drops the
// answers.
func (s *Server) visibilityChangedLocked() {
	now := time.Now()
	for k := range s.set.recs {
		if s.visibleLocked(k.owner) {
			delete(s.goneSince, k.owner)
		} else if _, ok := s.goneSince[k.owner]; !ok {
			s.goneSince[k.owner] = now
		}
	}
	s.changedLocked()
}

// Owned is a record that one of this peer's allocations calls for.
type Owned struct {
	Name      string     // "pod.ns", or a name in the domain
	Addr      netip.Addr // the allocation's address
	Container string     // the allocation's ID
}

// SyncOwned makes this peer's records agree with its allocations: every
// record in want exists, and every record of ours that names a container
// (the pods' records) whose allocation is gone, or holds another address
// now, is removed with a tombstone that beats every older copy. allocated
// maps every allocation ID of this peer to its address. Records without a
// container (`weft dns add`) are the operator's and stay. It returns how
// many records it added and removed; both are broadcast.
func (s *Server) SyncOwned(want []Owned, allocated map[string]netip.Addr) (added, removed int, err error) {
	type key struct {
		name      string
		addr      netip.Addr
		container string
	}
	wanted := make(map[key]bool, len(want))
	for _, o := range want {
		fqdn, err := canonicalName(o.Name, s.cfg.Domain)
		if err != nil || !validAddr(o.Addr.Unmap()) || !validContainerID(o.Container) {
			continue // not a name this server can hold; Add would say why
		}
		wanted[key{fqdn, o.Addr.Unmap(), o.Container}] = true
	}
	s.mu.Lock()
	for k, v := range s.set.recs {
		if k.owner == s.cfg.Self && !v.deleted {
			delete(wanted, key{k.name, k.addr, v.container})
		}
	}
	s.mu.Unlock()
	for k := range wanted {
		if err := s.Add(k.name, k.addr, k.container); err != nil {
			return added, removed, err
		}
		added++
	}
	removed = s.tombstone(func(k recordKey, v recordVal) bool {
		if v.container == "" {
			return false
		}
		a, ok := allocated[v.container]
		return !ok || a.Unmap() != k.addr
	})
	return added, removed, nil
}

// collect deletes old tombstones and the records of peers gone for longer
// than DeadPeerTTL.
func (s *Server) collect(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.set.collect(now, s.cfg.TombstoneTTL, func(owner peer.ID) bool {
		if s.visibleLocked(owner) {
			return false
		}
		since, ok := s.goneSince[owner]
		if !ok {
			s.goneSince[owner] = now
			return false
		}
		return now.Sub(since) > s.cfg.DeadPeerTTL
	})
	if n > 0 {
		s.changedLocked()
		s.log.Debug("collected records", "count", n)
	}
}
