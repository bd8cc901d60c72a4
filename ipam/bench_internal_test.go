package ipam

import (
	"path/filepath"
	"testing"

	"github.com/weftmesh/weft/peer"
)

// thousandTokenRing divides the default range among 1,000 peers: 1,000
// tokens.
func thousandTokenRing() Ring {
	ids := make([]peer.ID, 1000)
	for i := range ids {
		ids[i] = peer.ID(i + 100)
	}
	return divide(1<<20, ids, func(s, e uint64) uint32 { return uint32(e - s) })
}

// BenchmarkRingMerge1000 measures the CRDT join of two 1,000-token rings
// that differ in every token.
func BenchmarkRingMerge1000(b *testing.B) {
	base := thousandTokenRing()
	newer := base.Clone()
	for i := range newer.Tokens {
		newer.Tokens[i].Version++
	}
	b.ReportAllocs()
	for b.Loop() {
		r := base.Clone()
		r.Merge(newer.Tokens)
	}
}

// BenchmarkMergeFullState1000 measures Allocator.Merge of a 1,000-token
// full state that changes every token: decode, validate, join, bbolt
// commit of the changed tokens (fsync on), FullState re-encode.
func BenchmarkMergeFullState1000(b *testing.B) {
	cfg := DefaultConfig()
	cfg.Self = 1
	cfg.DBPath = filepath.Join(b.TempDir(), "ipam.db")
	a, err := New(cfg, &recorder{})
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	r := thousandTokenRing()
	m := message{Kind: kindFull, Range: cfg.Range, Seed: r.Seed, Tokens: r.Tokens}
	if err := a.Merge(2, m.encode()); err != nil {
		b.Fatal(err)
	}
	full := m.encode()
	delta := (&message{Kind: kindDelta, Range: cfg.Range, Seed: r.Seed, Tokens: r.Tokens[:1]}).encode()
	i := 0
	for b.Loop() {
		b.StopTimer()
		i++
		for j := range m.Tokens {
			m.Tokens[j].Version = uint32(i + 1)
		}
		msg := m.encode()
		b.StartTimer()
		if err := a.Merge(2, msg); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(full)), "fullstate-bytes")
	b.ReportMetric(float64(len(delta)), "delta1-bytes")
}
