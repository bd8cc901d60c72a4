package dns

import (
	"net/netip"
	"testing"

	"github.com/weftmesh/weft/peer"
	"pgregory.net/rapid"
)

// TestSummaryRepairConverges: two servers with any records each become
// equal (equal summaries, equal record sets) after one exchange of
// Repair in each direction, every repair message fits a packet, and equal
// servers repair nothing.
func TestSummaryRepairConverges(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a, err := New(testConfig(1), nopTransport{})
		if err != nil {
			t.Fatal(err)
		}
		b, err := New(testConfig(2), nopTransport{})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []*Server{a, b} {
			recs := rapid.SliceOfN(genRecord(), 0, 60).Draw(t, "records")
			for _, r := range recs {
				r.Version += 1 << 62 // recent: tombstones within their TTL
				if _, err := s.merge(peer.ID(99), encodeRecords(kindFull, []record{r})); err != nil {
					t.Fatal(err)
				}
			}
		}
		exchange := func(from, to *Server) {
			for _, m := range from.Repair(to.Summary()) {
				if len(m) > 1000 {
					t.Fatalf("repair message of %d bytes; want ≤ 1000", len(m))
				}
				if _, err := to.merge(from.cfg.Self, m); err != nil {
					t.Fatalf("merge repair: %v", err)
				}
			}
		}
		exchange(a, b)
		exchange(b, a)
		if string(a.Summary()) != string(b.Summary()) {
			t.Fatalf("summaries differ after repair")
		}
		if got, want := sortRecords(a.set.all()), sortRecords(b.set.all()); len(got) != len(want) {
			t.Fatalf("record sets differ: %d and %d records", len(got), len(want))
		}
		if m := a.Repair(b.Summary()); m != nil {
			t.Fatalf("repair between equal servers: %d messages", len(m))
		}
	})
}

func TestRepairIgnoresGarbage(t *testing.T) {
	s, err := New(testConfig(1), nopTransport{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Add("web", netip.MustParseAddr("10.32.0.5"), "c1"); err != nil {
		t.Fatal(err)
	}
	for _, remote := range [][]byte{nil, []byte("x"), make([]byte, summaryLen)} {
		got := s.Repair(remote)
		if want := len(remote) == summaryLen && remote[0] == summaryMagic; (got != nil) != want {
			t.Errorf("Repair(%d bytes) = %d messages", len(remote), len(got))
		}
	}
}
