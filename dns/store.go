package dns

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/weftmesh/weft/peer"
)

// The record set's local operations and its gossip side: Add, Remove and
// RemoveContainer change only our own records and broadcast them as a
// delta; Merge applies what other peers send; SetPeers hides the records
// of peers that are not alive. Every change drops the answer snapshot and
// the cached full state, which are rebuilt on next use.

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
	return owner == s.cfg.Self || s.members == nil || s.members[owner]
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
	kind, recs, err := decodeRecords(msg)
	if err != nil {
		return fmt.Errorf("dns merge from %s: %w", from, err)
	}
	if kind == kindDelta {
		for _, r := range recs {
			if r.Owner != from {
				return fmt.Errorf("dns merge from %s: record of %s: %w", from, r.Owner, errForeignDelta)
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
	return nil
}

// SetPeers hands over the membership: records of peers that are not alive
// (dead, left, or absent from peers) are hidden at once and deleted after
// DeadPeerTTL; they reappear if the peer comes back. Suspect peers stay
// visible: suspicion is memberlist's maybe, and is often refuted.
func (s *Server) SetPeers(peers []peer.Info) {
	members := make(map[peer.ID]bool, len(peers))
	for _, p := range peers {
		if p.State == peer.Alive || p.State == peer.Suspect {
			members[p.ID] = true
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	changed := s.members == nil || len(members) != len(s.members)
	for id := range members {
		changed = changed || !s.members[id]
		delete(s.goneSince, id)
	}
	for id := range s.members {
		if !members[id] {
			if _, ok := s.goneSince[id]; !ok {
				s.goneSince[id] = now
			}
		}
	}
	s.members = members
	if changed {
		s.changedLocked()
	}
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
