package gossip

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
)

// TestMismatchStreak: a membership repair is due only once the digests
// have differed from ours, one after another, for memberSpread; an equal
// digest in between starts over, and a repair due starts a new streak.
func TestMismatchStreak(t *testing.T) {
	t0 := time.Unix(1000, 0)
	sp := memberSpread
	steps := []struct {
		equal bool
		at    time.Duration
		due   bool
	}{
		{false, 0, false},            // a change spreading
		{false, sp / 2, false},       // still within memberSpread
		{true, sp * 3 / 4, false},    // gossip delivered it
		{false, sp, false},           // a new streak
		{false, 2*sp - 1, false},     // just short of memberSpread
		{false, 2 * sp, true},        // differing for memberSpread: a missed change
		{false, 2*sp + 1, false},     // the repair started a new streak
		{false, 3*sp + 1, true},      // due again (the push-pull did not mend it)
		{true, 4 * sp, false},        //
		{true, 10 * sp, false},       // equal digests never make one due
		{false, 11 * sp, false},      // the start of a streak
		{false, 11*sp + sp/2, false}, //
		{true, 12 * sp, false},       // ended before it was due
		{false, 12*sp + 1, false},    //
		{false, 13*sp + 1, true},     //
	}
	var s mismatchStreak
	for i, st := range steps {
		if got := s.observe(st.equal, t0.Add(st.at)); got != st.due {
			t.Errorf("step %d (equal %v at %v): due %v, want %v", i, st.equal, st.at, got, st.due)
		}
	}
}

// TestMembershipRepairWaitsForSpread: a digest whose membership summary
// differs starts no push-pull from a peer listed up until the summaries
// have differed for memberSpread, and starts one at once from a peer
// listed down (so that it learns it and refutes).
func TestMembershipRepairWaitsForSpread(t *testing.T) {
	peers := startMeshWith(t, 3, func(c *Config) { c.DigestInterval = time.Hour }, noRepairTimers,
		func(s *setHandler) Handler { return s })
	waitAlive(t, peers)
	m := peers[0].mesh
	ctx, sem := context.Background(), make(chan struct{}, 1)
	other := []byte("not-ours")
	digestFrom := func(name string, summary []byte) digest {
		return digest{from: name, entries: []digestEntry{{channel: membersChannel, summary: summary}}}
	}
	before := m.MemberSyncs()
	m.answerDigest(ctx, sem, digestFrom("p001", other))
	if got := m.MemberSyncs() - before; got != 0 {
		t.Fatalf("first differing digest from a live peer: %d push-pulls, want 0", got)
	}
	time.Sleep(memberSpread)
	m.answerDigest(ctx, sem, digestFrom("p001", other))
	if got := m.MemberSyncs() - before; got != 1 {
		t.Fatalf("differing for memberSpread: %d push-pulls, want 1", got)
	}

	peers[2].stop()
	testutil.Eventually(t, 30*time.Second, "p000 to list p002 down", func() error {
		for _, p := range m.Peers() {
			if p.Name == "p002" && !p.State.Up() {
				return nil
			}
		}
		return fmt.Errorf("p002 still up")
	})
	m.answerDigest(ctx, sem, digestFrom("p001", m.membersSummary())) // equal: no streak
	time.Sleep(time.Until(time.Unix(0, m.lastMemberSync.Load()).Add(membershipSyncEvery)))
	m.answerDigest(ctx, sem, digestFrom("p002", other))
	if got := m.MemberSyncs() - before; got != 2 {
		t.Fatalf("differing digest from a peer listed down: %d push-pulls in all, want 2", got)
	}
}
