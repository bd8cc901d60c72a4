package dns

import (
	"net/netip"
	"time"

	"github.com/weftmesh/weft/peer"
)

// The record set is a CRDT: a map from (owner, name, address) to a value
// that only the owner writes. Values are totally ordered (version, then
// tombstone over live, then container ID), and merge keeps the greater one
// per key, so merge is commutative, associative and idempotent and every
// peer that has seen the same records holds the same set, whatever the
// order, loss or duplication of messages.
//
// Versions are hybrid clocks: an owner stamps a change with
// max(last+1, wall clock in ns), so versions keep growing across restarts
// that lose the counter, and it raises its counter past any version of its
// own records that comes back to it by gossip.
//
// Removals are tombstones, kept until TombstoneTTL after the owner stamped
// them (a version is the owner's clock in ns), so that they reach every peer
// before they are collected. Aging by the stamp rather than by arrival makes
// every peer collect a tombstone at about the same time, so peers cannot
// keep handing an old tombstone back and forth. Collection is local and is
// not part of merge: a peer that was partitioned for longer than
// TombstoneTTL can resurrect a removed record.

// record is one entry of the set as it travels on the wire.
type record struct {
	Owner     peer.ID
	Name      string // lowercase FQDN, trailing dot
	Addr      netip.Addr
	Container string // container ID, may be empty
	Version   uint64
	Deleted   bool
}

type recordKey struct {
	owner peer.ID
	name  string
	addr  netip.Addr
}

type recordVal struct {
	version   uint64
	deleted   bool
	container string
}

// beats reports whether a wins over b in the CRDT's total order of the
// values of one key.
func (a recordVal) beats(b recordVal) bool {
	if a.version != b.version {
		return a.version > b.version
	}
	if a.deleted != b.deleted {
		return a.deleted
	}
	return a.container > b.container
}

// recordSet is the replicated state. It is not safe for concurrent use;
// the Server guards it.
type recordSet struct {
	recs map[recordKey]recordVal
}

func newRecordSet() *recordSet { return &recordSet{recs: make(map[recordKey]recordVal)} }

// apply merges one record and reports whether the set changed.
func (rs *recordSet) apply(r record) bool {
	k := recordKey{owner: r.Owner, name: r.Name, addr: r.Addr}
	v := recordVal{version: r.Version, deleted: r.Deleted, container: r.Container}
	cur, ok := rs.recs[k]
	if ok && !v.beats(cur) {
		return false
	}
	rs.recs[k] = v
	return true
}

// all returns every record, tombstones included.
func (rs *recordSet) all() []record {
	out := make([]record, 0, len(rs.recs))
	for k, v := range rs.recs {
		out = append(out, record{Owner: k.owner, Name: k.name, Addr: k.addr, Container: v.container, Version: v.version, Deleted: v.deleted})
	}
	return out
}

// collect deletes tombstones older than tombTTL and every record of the
// owners for which drop returns true, and reports how many it deleted.
func (rs *recordSet) collect(now time.Time, tombTTL time.Duration, drop func(peer.ID) bool) int {
	n := 0
	for k, v := range rs.recs {
		if (v.deleted && now.Sub(time.Unix(0, int64(v.version))) > tombTTL) || drop(k.owner) {
			delete(rs.recs, k)
			n++
		}
	}
	return n
}
