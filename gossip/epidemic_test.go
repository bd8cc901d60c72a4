package gossip

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/peer"
)

// epidemicSet is a setHandler that says whether a merge added anything.
type epidemicSet struct{ *setHandler }

func (e epidemicSet) MergeNew(from peer.ID, msg []byte) (bool, error) {
	before := e.len()
	err := e.Merge(from, msg)
	return e.len() > before, err
}

// noRepairTimers: push-pull (membership only: with digests on, it carries
// no channel state) every 2 s, so membership converges.
func noRepairTimers(c *memberlist.Config) {
	c.PushPullInterval = 2 * time.Second
	c.ProbeInterval = 500 * time.Millisecond
	c.ProbeTimeout = 400 * time.Millisecond
	c.SuspicionMult = 6
}

// waitAlive waits until every peer sees n alive peers.
func waitAlive(t *testing.T, peers []*testPeer) {
	t.Helper()
	testutil.Eventually(t, 60*time.Second, "every peer to see every peer alive", func() error {
		for i, p := range peers {
			if err := wantCount(fmt.Sprintf("alive seen by p%03d", i), countState(p, peer.Alive), len(peers)); err != nil {
				return err
			}
		}
		return nil
	})
}

// waitItem waits until every peer's set holds item.
func waitItem(t *testing.T, peers []*testPeer, item string) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, "every peer to hold "+item, func() error {
		for i, p := range peers {
			p.set.mu.Lock()
			ok := p.set.items[item]
			p.set.mu.Unlock()
			if !ok {
				return fmt.Errorf("p%03d lacks %s", i, item)
			}
		}
		return nil
	})
}

// TestEpidemicRelay: with digests an hour apart (and so no channel state
// in push-pull), a broadcast reaches all 40 peers only because the peers
// that receive it forward it. Both ways of deciding "new" are covered: the handler's own
// (Epidemic) and the mesh's cache of seen frames.
func TestEpidemicRelay(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler func(*setHandler) Handler
	}{
		{"epidemic handler", func(s *setHandler) Handler { return epidemicSet{s} }},
		{"seen cache", func(s *setHandler) Handler { return s }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 40
			// Without anti-entropy nothing repairs a miss: each of the 39
			// forwarders sends an item RetransmitMult·⌈log10(N+1)⌉ times to
			// random peers, so one peer misses all of them with probability
			// about e^(-that) — e^-8 with the default 4, which over 5 items,
			// 39 peers and two cases failed about one run in ten. 8 makes it
			// e^-16. (Production keeps 4: the digests repair a miss.)
			tune := func(c *memberlist.Config) { noRepairTimers(c); c.RetransmitMult = 8 }
			peers := startMeshWith(t, n, func(c *Config) { c.DigestInterval = time.Hour }, tune, tc.handler)
			waitAlive(t, peers)
			for k := range 5 {
				item := fmt.Sprintf("item-%d", k)
				peers[k].set.add(item)
				peers[k].ch.Broadcast([]byte(item))
			}
			for k := range 5 {
				waitItem(t, peers, fmt.Sprintf("item-%d", k))
			}
			var relayed uint64
			for _, p := range peers {
				relayed += p.mesh.Relayed()
			}
			// Every peer but the originator forwards each new item once.
			if want := uint64(5 * (n - 1)); relayed < want/2 || relayed > want {
				t.Errorf("relayed %d broadcasts in all; want about %d (each peer forwards each new item once)", relayed, want)
			}
		})
	}
}

// TestDigestAntiEntropy: state changed without any broadcast (as if every
// broadcast were lost) reaches all peers through the digests alone, and
// once every peer agrees, digests stop causing repairs.
func TestDigestAntiEntropy(t *testing.T) {
	const n = 30
	peers := startMeshWith(t, n, func(c *Config) { c.DigestInterval = 100 * time.Millisecond }, noRepairTimers,
		func(s *setHandler) Handler { return s })
	waitAlive(t, peers)
	peers[3].set.add("quiet-1")
	peers[17].set.add("quiet-2")
	waitItem(t, peers, "quiet-1")
	waitItem(t, peers, "quiet-2")

	total := func() uint64 {
		var r uint64
		for _, p := range peers {
			r += p.mesh.Repairs()
		}
		return r
	}
	// Repairs already sent may still be in flight; then none.
	testutil.Eventually(t, 20*time.Second, "repairs to stop once all agree", func() error {
		before := total()
		time.Sleep(time.Second) // one measurement window of ~10 digest rounds
		if after := total(); after != before {
			return fmt.Errorf("%d repairs in a second of agreement", after-before)
		}
		return nil
	})
}

func TestDigestRoundTrip(t *testing.T) {
	for _, d := range []digest{
		{from: "a", entries: nil},
		{reply: true, from: "host-17", entries: []digestEntry{{"ipam", []byte{1, 2, 3}}, {"dns", make([]byte, maxSummary)}}},
	} {
		got, err := decodeDigest(encodeDigest(d))
		if err != nil {
			t.Fatalf("decodeDigest(encodeDigest(%+v)): %v", d, err)
		}
		if got.reply != d.reply || got.from != d.from || len(got.entries) != len(d.entries) {
			t.Fatalf("round trip = %+v; want %+v", got, d)
		}
		for i := range d.entries {
			if got.entries[i].channel != d.entries[i].channel || !slices.Equal(got.entries[i].summary, d.entries[i].summary) {
				t.Errorf("entry %d = %+v; want %+v", i, got.entries[i], d.entries[i])
			}
		}
	}
}

func FuzzDecodeDigest(f *testing.F) {
	f.Add(encodeDigest(digest{from: "p1", entries: []digestEntry{{"ipam", []byte("abc")}}}))
	f.Add(encodeDigest(digest{reply: true, from: "x"}))
	f.Add([]byte{0, 1, 'a', 1, 4, 'i', 'p', 'a', 'm', 0xff, 0xff})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := decodeDigest(b)
		if err != nil {
			return
		}
		if len(d.entries) > maxDigestChannels {
			t.Fatalf("%d entries", len(d.entries))
		}
		again, err := decodeDigest(encodeDigest(d))
		if err != nil || again.from != d.from || len(again.entries) != len(d.entries) {
			t.Fatalf("re-encode of a valid digest: %+v, %v", again, err)
		}
	})
}

// A channel's inbox keeps at most InboxSize messages, oldest first, drops
// (and counts) the rest, and allocates nothing before the first message.
func TestInbox(t *testing.T) {
	c := &Channel{}
	c.inbox.init(3)
	if cap(c.inbox.q) != 0 {
		t.Fatalf("an empty inbox holds room for %d messages", cap(c.inbox.q))
	}
	payload := []byte("m0")
	for i := range 5 {
		payload[1] = byte('0' + i)
		c.deliver(peer.ID(i), payload, nil)
	}
	if got := c.Dropped(); got != 2 {
		t.Errorf("Dropped() = %d after 5 messages into an inbox of 3; want 2", got)
	}
	select {
	case <-c.inbox.ready:
	default:
		t.Fatal("inbox not ready with messages queued")
	}
	got := c.inbox.take()
	if len(got) != 3 {
		t.Fatalf("took %d messages; want 3", len(got))
	}
	for i, in := range got {
		if in.from != peer.ID(i) || string(in.msg) != "m"+string(rune('0'+i)) {
			t.Errorf("message %d: from %v %q; want from %d %q (in order, copied)", i, in.from, in.msg, i, "m"+string(rune('0'+i)))
		}
	}
	if q := c.inbox.take(); len(q) != 0 {
		t.Errorf("took %d more messages from an emptied inbox", len(q))
	}
	c.deliver(9, payload, nil)
	if q := c.inbox.take(); len(q) != 1 || c.Dropped() != 2 {
		t.Errorf("after emptying: took %d, dropped %d; want 1 taken, still 2 dropped", len(q), c.Dropped())
	}
}
