package ipam_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/ipam"
	"github.com/weftmesh/weft/peer"
)

// TestRingBalanceOneByOne joins peers one after another to a ring that
// the first peer formed alone; each joiner allocates one address, so it
// asks the peer with the most free space for some. It logs every peer's
// share after each join and checks max/min share.
//
// The bound the design gives here: every run is a CIDR block of 2^k
// addresses with its owner's one allocation at its start, so the donor's
// largest free span is its run but for an address or two, and the
// donation (half the span rounded to the nearest CIDR size) is exactly
// the upper half of the run. Shares stay powers of two, so the peer with
// the most free space, the donor, is one with the largest share M, and
// splitting it into two halves keeps max/min <= 2 (the halves, M/2, are
// at least half of any share). Before this rule (the largest block in the
// span's upper half, at most half the span) each joiner got an eighth of
// the donor's run and max/min was 8 after 10 joins, the first peer
// holding 25 % and the last ones 3.125 %.
func TestRingBalanceOneByOne(t *testing.T) {
	const joins = 10
	c := newCluster(t, t.TempDir(), joins+1, "10.32.0.0/12", consensus(1), 30)
	c.inits = map[peer.ID]ipam.Init{}
	for _, id := range c.ids[1:] {
		c.inits[id] = ipam.Init{Mode: ipam.InitObserver}
	}
	defer c.close()
	first := c.start(c.ids[0])
	c.waitReady(10*time.Second, c.ids[0])
	if _, err := first.Allocate(ctxT(t, 10*time.Second), "pod-h0"); err != nil {
		t.Fatalf("Allocate on the first peer = %v", err)
	}
	for j := 1; j <= joins; j++ {
		id := c.ids[j]
		a := c.start(id)
		c.waitReady(10*time.Second, id)
		if _, err := a.Allocate(ctxT(t, 10*time.Second), "pod-"+name(id)); err != nil {
			t.Fatalf("join %d: Allocate on %s = %v", j, name(id), err)
		}
		c.healAndConverge(10 * time.Second)
		c.checkUnique()

		share := map[peer.ID]float64{}
		for _, o := range a.Status().Owners {
			share[o.ID] = o.Share
		}
		if len(share) != j+1 {
			t.Fatalf("join %d: %d owners; want %d", j, len(share), j+1)
		}
		lo, hi := 1.0, 0.0
		var shares []string
		for _, id := range c.ids[:j+1] {
			lo, hi = min(lo, share[id]), max(hi, share[id])
			shares = append(shares, fmt.Sprintf("%s=%.3f%%", name(id), 100*share[id]))
		}
		t.Logf("after %2d joins (%2d peers): max %.4f min %.4f max/min %.2f  %s",
			j, j+1, hi, lo, hi/lo, strings.Join(shares, " "))
		if hi/lo > 2 {
			t.Errorf("after %d joins: max/min share = %.2f (max %.4f, min %.4f); want <= 2", j, hi/lo, hi, lo)
		}
	}
}
