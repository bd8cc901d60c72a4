package ipam

import (
	"net/netip"
	"testing"

	"github.com/weftmesh/weft/peer"
)

// bigRing builds a ring of n peers' tokens over a /12, as after donations.
func bigRing(n int) Ring {
	rng := netip.MustParsePrefix("10.32.0.0/12")
	size := uint64(1) << (32 - rng.Bits())
	r := Ring{Size: size, Seed: 42}
	for i := range n {
		r.Tokens = append(r.Tokens, Token{Start: uint32(uint64(i) * size / uint64(n)), Owner: peer.ID(i + 1), Version: 3, Free: 100})
	}
	return r
}

func fullOf(rng netip.Prefix, r *Ring) []byte {
	m := message{Kind: kindFull, Range: rng, Seed: r.Seed, Tokens: r.Tokens}
	return m.encode()
}

// TestSummaryRepair: a peer that missed some writes gets, from a peer's
// Repair of its summary, deltas that make the two summaries equal, and
// only the slices that differ travel.
func TestSummaryRepair(t *testing.T) {
	rng := netip.MustParsePrefix("10.32.0.0/12")
	for _, tc := range []struct {
		name    string
		change  func(*Ring)
		maxMsgs int
	}{
		{"one free count", func(r *Ring) { r.Tokens[500].Version++; r.Tokens[500].Free-- }, 1},
		{"a split", func(r *Ring) {
			t := r.Tokens[10]
			t.Start += 8
			t.Owner = 7777
			r.Merge([]Token{t})
		}, 1},
		{"two far slices", func(r *Ring) { r.Tokens[0].Version++; r.Tokens[999].Version++ }, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			behind := bigRing(1000)
			ahead := behind.Clone()
			tc.change(&ahead)
			if len(summarize(rng, &ahead)) != summaryLen {
				t.Fatalf("summary of %d bytes; want %d", len(summarize(rng, &ahead)), summaryLen)
			}
			msgs := repair(rng, summarize(rng, &ahead), fullOf(rng, &ahead), summarize(rng, &behind))
			if len(msgs) == 0 || len(msgs) > tc.maxMsgs*2 {
				t.Fatalf("repair sent %d messages; want 1..%d", len(msgs), tc.maxMsgs*2)
			}
			for _, b := range msgs {
				if len(b) > 1000 {
					t.Errorf("repair message of %d bytes; want ≤ 1000 (one packet)", len(b))
				}
				m, err := decode(b)
				if err != nil {
					t.Fatalf("decode repair: %v", err)
				}
				behind.Merge(m.Tokens)
			}
			if got, want := summarize(rng, &behind), summarize(rng, &ahead); string(got) != string(want) {
				t.Errorf("after repair the summaries differ")
			}
			if again := repair(rng, summarize(rng, &ahead), fullOf(rng, &ahead), summarize(rng, &behind)); again != nil {
				t.Errorf("repair of equal rings = %d messages; want none", len(again))
			}
		})
	}
}

func TestRepairEdgeCases(t *testing.T) {
	rng := netip.MustParsePrefix("10.32.0.0/12")
	r := bigRing(100)
	mine, full := summarize(rng, &r), fullOf(rng, &r)
	empty := Ring{Size: r.Size}
	other := bigRing(100)
	other.Seed = 43
	for _, tc := range []struct {
		name   string
		remote []byte
		want   int
	}{
		{"ringless peer gets the whole ring", summarize(rng, &empty), 1},
		{"another ring gets nothing", summarize(rng, &other), 0},
		{"garbage gets nothing", []byte("hello"), 0},
		{"equal gets nothing", mine, 0},
	} {
		if got := repair(rng, mine, full, tc.remote); len(got) != tc.want {
			t.Errorf("%s: %d messages; want %d", tc.name, len(got), tc.want)
		}
	}
	if got := repair(rng, summarize(rng, &empty), fullOf(rng, &empty), mine); got != nil {
		t.Errorf("a peer without a ring repaired %d messages; want none", len(got))
	}
}
