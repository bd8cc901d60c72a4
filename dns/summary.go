package dns

// Anti-entropy summary (gossip.Summarizer). Records are spread over
// summaryBuckets buckets by a hash of their key (owner, name, address);
// a bucket's digest is the XOR of its records' hashes (key, version,
// deletion), so it needs no ordering and is cheap to compute. The summary
// is 1+8·32 = 257 bytes whatever the number of records. When two peers'
// summaries differ, only the records of the differing buckets travel, in
// full-state messages of at most repairChunk records (one UDP packet with
// a container ID each): full state, because a delta may carry only the
// sender's own records, and a repair carries everybody's.
//
// Tombstones older than the tombstone TTL are left out of both the
// summary and the repair: whether a peer has collected them yet is a
// matter of timing, not a difference worth sending.

import (
	"encoding/binary"
	"hash/fnv"
	"time"

	"github.com/weftmesh/weft/peer"
)

const (
	summaryBuckets = 32
	summaryMagic   = 'D'
	summaryLen     = 1 + 8*summaryBuckets
	repairChunk    = 6
)

func recordHash(k recordKey, v recordVal) (bucket int, h uint64) {
	f := fnv.New64a()
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(k.owner))
	f.Write(b[:])
	f.Write([]byte(k.name))
	f.Write(k.addr.AsSlice())
	bucket = int(f.Sum64() % summaryBuckets)
	binary.BigEndian.PutUint64(b[:], v.version)
	f.Write(b[:])
	if v.deleted {
		f.Write([]byte{1})
	}
	return bucket, f.Sum64()
}

// live reports whether a record counts for anti-entropy at now.
func (s *Server) live(v recordVal, now time.Time) bool {
	return !v.deleted || now.Sub(time.Unix(0, int64(v.version))) <= s.cfg.TombstoneTTL
}

// summaryLocked computes the summary at now.
func (s *Server) summaryLocked(now time.Time) []byte {
	var sums [summaryBuckets]uint64
	for k, v := range s.set.recs {
		if s.live(v, now) {
			b, h := recordHash(k, v)
			sums[b] ^= h
		}
	}
	out := make([]byte, 0, summaryLen)
	out = append(out, summaryMagic)
	for _, x := range sums {
		out = binary.BigEndian.AppendUint64(out, x)
	}
	return out
}

// Summary returns the anti-entropy summary of the record set
// (gossip.Summarizer).
func (s *Server) Summary() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.summaryLocked(time.Now())
}

// Repair returns the records of every bucket whose digest differs from
// remote's, as full-state messages of at most repairChunk records
// (gossip.Summarizer); nil when the summaries are equal or remote is not
// a summary.
func (s *Server) Repair(remote []byte) [][]byte {
	if len(remote) != summaryLen || remote[0] != summaryMagic {
		return nil
	}
	s.mu.Lock()
	now := time.Now()
	mine := s.summaryLocked(now)
	if string(mine) == string(remote) {
		s.mu.Unlock()
		return nil
	}
	var differ [summaryBuckets]bool
	for i := range summaryBuckets {
		off := 1 + 8*i
		differ[i] = string(mine[off:off+8]) != string(remote[off:off+8])
	}
	var recs []record
	for k, v := range s.set.recs {
		if b, _ := recordHash(k, v); differ[b] && s.live(v, now) {
			recs = append(recs, record{Owner: k.owner, Name: k.name, Addr: k.addr, Container: v.container, Version: v.version, Deleted: v.deleted})
		}
	}
	s.mu.Unlock()
	var out [][]byte
	for len(recs) > 0 {
		n := min(len(recs), repairChunk)
		out = append(out, encodeRecords(kindFull, recs[:n]))
		recs = recs[n:]
	}
	return out
}

// MergeNew is Merge that also reports whether the message changed the
// record set (gossip relays only such broadcasts onward: gossip.Epidemic).
func (s *Server) MergeNew(from peer.ID, msg []byte) (bool, error) {
	return s.merge(from, msg)
}
