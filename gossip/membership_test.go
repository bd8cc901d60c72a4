package gossip

import (
	"context"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/peer"
)

// buckets builds per-bucket summaries: hash i+1 for every bucket, each of
// the given age, except as set.
func testBuckets(age byte, set map[int][2]uint64) []byte {
	var b []byte
	for i := range memberBuckets {
		h, a := uint64(i+1), uint64(age)
		if v, ok := set[i]; ok {
			h, a = v[0], v[1]
		}
		b = binary.BigEndian.AppendUint32(b, uint32(h))
		b = append(b, byte(a))
	}
	return b
}

// TestSettledDifference: a difference is repaired only in a bucket both
// sides have held as it is for memberSpread; a digest without buckets (an
// older peer) always is.
func TestSettledDifference(t *testing.T) {
	settled := uint64(memberSpread / bucketAgeUnit)
	local := testBuckets(maxBucketAge, map[int][2]uint64{3: {4, settled - 1}})
	cases := []struct {
		name   string
		remote []byte
		want   bool
	}{
		{"equal", testBuckets(maxBucketAge, map[int][2]uint64{3: {4, 0}}), false},
		{"equal hashes, any ages", testBuckets(0, nil), false},
		{"differ where the remote just changed", testBuckets(maxBucketAge, map[int][2]uint64{7: {99, settled - 1}}), false},
		{"differ where the remote changed memberSpread ago", testBuckets(maxBucketAge, map[int][2]uint64{7: {99, settled}}), true},
		{"differ where we just changed", testBuckets(maxBucketAge, map[int][2]uint64{3: {5, maxBucketAge}}), false},
		{"two differ, one settled", testBuckets(maxBucketAge, map[int][2]uint64{3: {5, maxBucketAge}, 9: {1, maxBucketAge}}), true},
		{"no buckets (an older peer)", nil, true},
		{"malformed", []byte{1, 2, 3}, true},
	}
	for _, c := range cases {
		if got := settledDifference(local, c.remote); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// TestBucketAge: ages in units, capped; never changed is the oldest.
func TestBucketAge(t *testing.T) {
	now := time.Unix(5000, 0)
	for _, c := range []struct {
		at   time.Time
		want byte
	}{
		{time.Time{}, maxBucketAge},
		{now, 0},
		{now.Add(-250 * time.Millisecond), 2},
		{now.Add(-memberSpread), byte(memberSpread / bucketAgeUnit)},
		{now.Add(-maxBucketAge*bucketAgeUnit - time.Second), maxBucketAge},
		{now.Add(-24 * time.Hour), maxBucketAge},
		{now.Add(time.Second), 0}, // a clock step back
	} {
		if got := bucketAge(c.at, now); got != c.want {
			t.Errorf("bucketAge(%v before) = %d, want %d", now.Sub(c.at), got, c.want)
		}
	}
}

// xorBuckets is the XOR of every bucket's hash: the low 32 bits of the
// whole summary.
func xorBuckets(b []byte) uint32 {
	var x uint32
	for i := 0; i < len(b); i += bucketSize {
		x ^= binary.BigEndian.Uint32(b[i:])
	}
	return x
}

// TestMembershipRepairWaitsForSpread: the buckets split the membership
// summary; a digest whose summary differs starts no push-pull from a peer
// listed up while the bucket that differs has just changed on the
// sender's side, one once both sides have held it for memberSpread, one at
// once from an older peer (no buckets) and from a peer listed down (so
// that it learns it and refutes).
func TestMembershipRepairWaitsForSpread(t *testing.T) {
	peers := startMeshWith(t, 3, func(c *Config) { c.DigestInterval = time.Hour }, noRepairTimers,
		func(s *setHandler) Handler { return s })
	waitAlive(t, peers)
	m := peers[0].mesh
	if err := m.SetMeta(peer.Meta{Joined: true}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	own := m.bucketSummaries(now)
	for _, name := range []string{"p000", "p001", "p002"} { // ourselves (SetMeta) and the peers we met
		if age := own[bucketOf(name)*bucketSize+4]; age == maxBucketAge {
			t.Errorf("bucket of %s (%d) never changed at p000", name, bucketOf(name))
		}
	}
	if age := own[bucketOf("p000")*bucketSize+4]; age >= byte(memberSpread/bucketAgeUnit) {
		t.Errorf("our bucket is %d old right after SetMeta", age)
	}
	for _, p := range peers {
		if got, want := xorBuckets(p.mesh.bucketSummaries(time.Now())), uint32(binary.BigEndian.Uint64(p.mesh.membersSummary())); got != want {
			t.Fatalf("%s: buckets XOR to %x, summary %x", p.mesh.cfg.Name, got, want)
		}
	}

	ctx, sem := context.Background(), make(chan struct{}, 1)
	other := []byte("not-ours")
	// A bucket with no peer in it here: never changed, on our side as old
	// as can be.
	empty := -1
	for i := range memberBuckets {
		if own[i*bucketSize+4] == maxBucketAge {
			empty = i
			break
		}
	}
	if empty < 0 {
		t.Fatal("no empty bucket among 3 peers")
	}
	remote := func(age byte) []byte {
		b := append([]byte(nil), own...)
		b[empty*bucketSize] ^= 1
		b[empty*bucketSize+4] = age
		return b
	}
	digestFrom := func(name string, buckets []byte) digest {
		d := digest{from: name, entries: []digestEntry{{channel: membersChannel, summary: other}}}
		if buckets != nil {
			d.entries = append(d.entries, digestEntry{channel: bucketsChannel, summary: buckets})
		}
		return d
	}
	syncs := func(want uint64, what string) {
		t.Helper()
		if got := m.MemberSyncs(); got != want {
			t.Fatalf("%s: %d push-pulls, want %d", what, got, want)
		}
	}
	waitSyncGap := func() {
		time.Sleep(time.Until(time.Unix(0, m.lastMemberSync.Load()).Add(membershipSyncEvery)))
	}
	before := m.MemberSyncs()
	m.answerDigest(ctx, sem, digestFrom("p001", remote(0)))
	syncs(before, "a bucket the sender just changed")
	m.answerDigest(ctx, sem, digestFrom("p001", remote(byte(memberSpread/bucketAgeUnit)-1)))
	syncs(before, "a bucket the sender changed just under memberSpread ago")
	m.answerDigest(ctx, sem, digestFrom("p001", remote(byte(memberSpread/bucketAgeUnit))))
	syncs(before+1, "a bucket both sides have held memberSpread")
	waitSyncGap()
	m.answerDigest(ctx, sem, digestFrom("p001", nil))
	syncs(before+2, "a digest without buckets (an older peer)")

	peers[2].stop()
	testutil.Eventually(t, 30*time.Second, "p000 to list p002 down", func() error {
		for _, p := range m.Peers() {
			if p.Name == "p002" && !p.State.Up() {
				return nil
			}
		}
		return fmt.Errorf("p002 still up")
	})
	waitSyncGap()
	m.answerDigest(ctx, sem, digestFrom("p002", remote(0)))
	syncs(before+3, "a differing digest from a peer listed down")
}
