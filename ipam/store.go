package ipam

// Persistence. One bbolt file holds the ring's tokens, this peer's
// allocations and its Paxos acceptor state. Every change to allocations is
// written in the same transaction as the tokens whose free counts it changed,
// so after a crash the store never holds an allocation outside a run the
// stored ring gives to this peer, nor a ring that forgot one. The acceptor
// state is written before its promise or acceptance is sent, as Paxos needs.

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"github.com/weftmesh/weft/peer"
	bolt "go.etcd.io/bbolt"
)

var (
	bucketMeta   = []byte("meta")
	bucketTokens = []byte("tokens")
	bucketAllocs = []byte("allocs")
	bucketPaxos  = []byte("paxos")
	keyRange     = []byte("range")
	keySelf      = []byte("self")
	keySeed      = []byte("seed")
	keyLeaving   = []byte("leaving") // present once Handoff started: 8-byte target (0 = none yet)
)

type store struct {
	db     *bolt.DB
	noSync bool   // never fsync (Config.NoSync)
	synced uint64 // commits that were synced to disk (Allocator.Syncs)
}

// acceptorState is one Paxos acceptor's memory of one instance.
type acceptorState struct {
	Promised ballot
	Accepted ballot
	Value    []peer.ID
}

// batch is one transaction's worth of changes.
type batch struct {
	seed     uint64
	tokens   []Token
	put      map[string]uint32 // allocation id -> offset
	names    map[string]string // allocation id -> name, for ids in put that have one
	del      []string
	delAll   bool // drop every allocation (handoff)
	owners   bool // ownership changed (not only free counts): notify Changed
	lazy     bool // skip fsync: the data can be recovered from gossip
	acceptor *instanceKey
	accState acceptorState
	leaving  *peer.ID // mark the store as handed off, to this target
}

func openStore(path string, rng netip.Prefix, self peer.ID, noSync bool) (*store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second, NoSync: noSync})
	if err != nil {
		return nil, fmt.Errorf("open ipam store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketTokens, bucketAllocs, bucketPaxos} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if r := meta.Get(keyRange); r != nil && string(r) != rng.String() {
			return fmt.Errorf("store holds range %s, config says %s: %w", r, rng, ErrBadRange)
		}
		if s := meta.Get(keySelf); len(s) == 8 && peer.ID(binary.BigEndian.Uint64(s)) != self {
			return fmt.Errorf("store belongs to peer %016x, not %s: %w", binary.BigEndian.Uint64(s), self, ErrBadConfig)
		}
		if err := meta.Put(keyRange, []byte(rng.String())); err != nil {
			return err
		}
		return meta.Put(keySelf, binary.BigEndian.AppendUint64(nil, uint64(self)))
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init ipam store %s: %w", path, err)
	}
	return &store{db: db, noSync: noSync}, nil
}

func (s *store) close() error { return s.db.Close() }

// load reads the ring, the allocations and the acceptor states.
// stored is what load returns.
type stored struct {
	ring      Ring
	allocs    map[string]uint32
	names     map[string]string // allocation id -> name, for named allocations
	acceptors map[instanceKey]*acceptorState
	leaving   bool    // Handoff started before the last shutdown
	target    peer.ID // the peer our tokens were offered to, if any
}

func (s *store) load(size uint64) (stored, error) {
	st := stored{}
	r := Ring{Size: size}
	allocs := map[string]uint32{}
	names := map[string]string{}
	acc := map[instanceKey]*acceptorState{}
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keySeed); len(v) == 8 {
			r.Seed = binary.BigEndian.Uint64(v)
		}
		if v := tx.Bucket(bucketMeta).Get(keyLeaving); len(v) == 8 {
			st.leaving, st.target = true, peer.ID(binary.BigEndian.Uint64(v))
		}
		if err := tx.Bucket(bucketTokens).ForEach(func(k, v []byte) error {
			if len(k) != 4 || len(v) != 16 {
				return fmt.Errorf("token record %x: %w", k, ErrBadMessage)
			}
			r.Tokens = append(r.Tokens, Token{
				Start:   binary.BigEndian.Uint32(k),
				Owner:   peer.ID(binary.BigEndian.Uint64(v)),
				Version: binary.BigEndian.Uint32(v[8:]),
				Free:    binary.BigEndian.Uint32(v[12:]),
			})
			return nil
		}); err != nil {
			return err
		}
		if err := tx.Bucket(bucketAllocs).ForEach(func(k, v []byte) error {
			// 4-byte offset, then the allocation's name (the pod's DNS
			// name), if it has one: a record and its allocation are one
			// key, added and removed in one transaction.
			if len(v) < 4 || len(v) > 4+maxNameLen {
				return fmt.Errorf("allocation record %q: %w", k, ErrBadMessage)
			}
			allocs[string(k)] = binary.BigEndian.Uint32(v)
			if len(v) > 4 {
				names[string(k)] = string(v[4:])
			}
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(bucketPaxos).ForEach(func(k, v []byte) error {
			m, err := decode(v)
			if err != nil || len(k) != 17 {
				return fmt.Errorf("paxos record %x: %w", k, ErrBadMessage)
			}
			acc[m.Key] = &acceptorState{Promised: m.Ballot, Accepted: m.Accepted, Value: m.Value}
			return nil
		})
	})
	if err != nil {
		return stored{}, fmt.Errorf("load ipam store: %w", err)
	}
	st.ring, st.allocs, st.names, st.acceptors = r, allocs, names, acc
	return st, nil
}

func keyBytes(k instanceKey) []byte {
	b := []byte{k.Kind}
	b = binary.BigEndian.AppendUint64(b, uint64(k.Dead))
	return binary.BigEndian.AppendUint64(b, k.Hash)
}

// commit writes one batch in one transaction. Callers serialise commits
// (Allocator.mu), which makes toggling db.NoSync per batch safe.
func (s *store) commit(b *batch) error {
	s.db.NoSync = s.noSync || b.lazy
	err := s.db.Update(func(tx *bolt.Tx) error {
		if b.leaving != nil {
			if err := tx.Bucket(bucketMeta).Put(keyLeaving, binary.BigEndian.AppendUint64(nil, uint64(*b.leaving))); err != nil {
				return err
			}
		}
		if b.seed != 0 {
			if err := tx.Bucket(bucketMeta).Put(keySeed, binary.BigEndian.AppendUint64(nil, b.seed)); err != nil {
				return err
			}
		}
		tb := tx.Bucket(bucketTokens)
		for _, t := range b.tokens {
			v := binary.BigEndian.AppendUint64(nil, uint64(t.Owner))
			v = binary.BigEndian.AppendUint32(v, t.Version)
			v = binary.BigEndian.AppendUint32(v, t.Free)
			if err := tb.Put(binary.BigEndian.AppendUint32(nil, t.Start), v); err != nil {
				return err
			}
		}
		if b.delAll {
			if err := tx.DeleteBucket(bucketAllocs); err != nil {
				return err
			}
			if _, err := tx.CreateBucket(bucketAllocs); err != nil {
				return err
			}
		}
		ab := tx.Bucket(bucketAllocs)
		for _, id := range b.del {
			if err := ab.Delete([]byte(id)); err != nil {
				return err
			}
		}
		for id, off := range b.put {
			v := append(binary.BigEndian.AppendUint32(nil, off), b.names[id]...)
			if err := ab.Put([]byte(id), v); err != nil {
				return err
			}
		}
		if b.acceptor != nil {
			m := message{Kind: kindPromise, Range: netip.PrefixFrom(netip.IPv4Unspecified(), 0), Key: *b.acceptor,
				Ballot: b.accState.Promised, Accepted: b.accState.Accepted, Value: b.accState.Value}
			if err := tx.Bucket(bucketPaxos).Put(keyBytes(*b.acceptor), m.encode()); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("commit ipam store: %w", err)
	}
	if !s.db.NoSync {
		s.synced++
	}
	return nil
}
