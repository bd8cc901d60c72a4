package gossip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/weftmesh/weft/gossip/gossiptest"
	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/peer"
	"go.uber.org/goleak"
)

// memberlist.Shutdown does not wait for its scheduler's goroutines: a probe
// in flight finishes its ack timeout after Shutdown returns. Those are the
// only goroutines allowed to outlive a test.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/hashicorp/memberlist.(*Memberlist).triggerFunc"))
}

// setHandler is a grow-only set of strings: the smallest real CRDT, enough
// to prove that deltas and push-pull state reach every peer.
type setHandler struct {
	mu    sync.Mutex // guards following
	items map[string]bool
}

func newSet() *setHandler { return &setHandler{items: map[string]bool{}} }

func (s *setHandler) add(v string) {
	s.mu.Lock()
	s.items[v] = true
	s.mu.Unlock()
}

func (s *setHandler) FullState() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]string, 0, len(s.items))
	for k := range s.items {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return []byte(strings.Join(keys, "\n"))
}

func (s *setHandler) Merge(_ peer.ID, msg []byte) error {
	if len(msg) == 0 {
		return nil
	}
	for _, k := range strings.Split(string(msg), "\n") {
		if k == "" {
			return fmt.Errorf("empty item")
		}
		s.add(k)
	}
	return nil
}

func (s *setHandler) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.items)
}

// fastTimers shrinks memberlist's timers for in-memory meshes.
func fastTimers(tr memberlist.Transport) func(*memberlist.Config) {
	return func(c *memberlist.Config) {
		c.Transport = tr
		c.ProbeInterval = 100 * time.Millisecond
		c.ProbeTimeout = 50 * time.Millisecond
		c.GossipInterval = 20 * time.Millisecond
		c.PushPullInterval = 500 * time.Millisecond
		c.SuspicionMult = 2
		c.TCPTimeout = 5 * time.Second // joins are push-pulls: slow under -race on a loaded machine
		c.GossipToTheDeadTime = 2 * time.Second
	}
}

type testPeer struct {
	mesh   *Mesh
	set    *setHandler
	ch     *Channel
	cancel context.CancelFunc
	done   chan error
}

// startMesh creates n peers on one MockNetwork (all transports created
// before any node starts: the mock's peer map is not safe to grow while
// nodes gossip) and joins each to the first.
func startMesh(t *testing.T, n int, tune func(*memberlist.Config)) []*testPeer {
	t.Helper()
	return startMeshWith(t, n, nil, tune, func(s *setHandler) Handler { return s })
}

// startMeshWith is startMesh with a gossip configuration change and a
// choice of the handler wrapping each peer's set.
func startMeshWith(t *testing.T, n int, conf func(*Config), tune func(*memberlist.Config), handler func(*setHandler) Handler) []*testPeer {
	t.Helper()
	var mnet gossiptest.Network
	trs := make([]*gossiptest.Transport, n)
	for i := range trs {
		trs[i] = mnet.NewTransport(fmt.Sprintf("p%03d", i))
	}
	peers := make([]*testPeer, n)
	for i := range peers {
		cfg := DefaultConfig()
		cfg.Name = fmt.Sprintf("p%03d", i)
		cfg.ID = peer.ID(1000 + i)
		if os.Getenv("WEFT_TEST_LOG") != "" {
			cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("peer", i)
		}
		cfg.ReconnectEvery = 200 * time.Millisecond
		if conf != nil {
			conf(&cfg)
		}
		m := newTestMesh(t, cfg, trs[i], tune)
		set := newSet()
		ch := m.Channel("set", handler(set))
		ctx, cancel := context.WithCancel(context.Background())
		tp := &testPeer{mesh: m, set: set, ch: ch, cancel: cancel, done: make(chan error, 1)}
		go func() { tp.done <- m.Run(ctx) }()
		peers[i] = tp
	}
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, p := range peers {
			wg.Add(1)
			go func() { defer wg.Done(); p.stop() }()
		}
		wg.Wait()
	})
	// Each peer joins an earlier one (a tree), as operators do when they
	// launch each host with one other host's address.
	for i, p := range peers[1:] {
		p.mesh.SetTargets([]string{trs[i/2].Addr()})
	}
	return peers
}

func (p *testPeer) stop() {
	if p.cancel == nil {
		return
	}
	p.cancel()
	<-p.done
	p.cancel = nil
}

// wantCount is nil when got is want, else an error naming what.
func wantCount(what string, got, want int) error {
	if got != want {
		return fmt.Errorf("%s = %d; want %d", what, got, want)
	}
	return nil
}

func peerNames(ps []peer.Info) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}

func countState(p *testPeer, st peer.State) int {
	n := 0
	for _, i := range p.mesh.Peers() {
		if i.State == st {
			n++
		}
	}
	return n
}

func TestMeshConverges50(t *testing.T) {
	const n = 50
	// Timers a little slower than fastTimers: 50 memberlists under -race
	// on 2 cores must not declare each other dead for being slow.
	peers := startMesh(t, n, func(c *memberlist.Config) {
		c.ProbeInterval = 500 * time.Millisecond
		c.ProbeTimeout = 400 * time.Millisecond
		c.SuspicionMult = 6
		c.GossipInterval = 100 * time.Millisecond
		c.PushPullInterval = 2 * time.Second
	})
	least := 0
	testutil.Eventually(t, 150*time.Second, "50 peers to see 50 alive", func() error {
		least = n
		for _, p := range peers {
			least = min(least, countState(p, peer.Alive))
		}
		return wantCount("least alive seen by a peer", least, n)
	})
	defer func() {
		if t.Failed() {
			t.Logf("least alive seen by a peer: %d", least)
		}
	}()
	t.Logf("converged; least alive seen %d", least)
	// Metadata of every peer is known everywhere.
	for _, i := range peers[7].mesh.Peers() {
		if i.ID == 0 {
			t.Errorf("peer %s has no ID in peers[7]'s table", i.Name)
		}
	}
}

func TestChannelReplicates(t *testing.T) {
	peers := startMesh(t, 5, nil)
	testutil.Eventually(t, 20*time.Second, "5 alive", func() error { return wantCount("alive", countState(peers[4], peer.Alive), 5) })
	for i, p := range peers {
		v := fmt.Sprintf("item-%d", i)
		p.set.add(v)
		p.ch.Broadcast([]byte(v))
	}
	// A large broadcast goes by TCP.
	big := strings.Repeat("x", 5000)
	peers[0].set.add(big)
	peers[0].ch.Broadcast([]byte(big))
	testutil.Eventually(t, 20*time.Second, "all sets to hold 6 items", func() error {
		for _, p := range peers {
			if err := wantCount(p.mesh.cfg.Name+" items", p.set.len(), 6); err != nil {
				return err
			}
		}
		return nil
	})
	// Unicast.
	if err := peers[1].ch.SendTo(context.Background(), peers[2].mesh.cfg.ID, []byte("direct")); err != nil {
		t.Fatalf("SendTo: %v", err)
	}
	testutil.Eventually(t, 10*time.Second, "unicast delivered", func() error { return wantCount("items", peers[2].set.len(), 7) })
	// State added without a broadcast arrives by push-pull anti-entropy.
	peers[3].set.add("quiet")
	testutil.Eventually(t, 20*time.Second, "push-pull to spread 'quiet'", func() error {
		for _, p := range []*testPeer{peers[0], peers[4]} {
			p.set.mu.Lock()
			ok := p.set.items["quiet"]
			p.set.mu.Unlock()
			if !ok {
				return fmt.Errorf("%s lacks it", p.mesh.cfg.Name)
			}
		}
		return nil
	})
}

func TestDeadAndRejoin(t *testing.T) {
	peers := startMesh(t, 5, nil)
	testutil.Eventually(t, 20*time.Second, "5 alive", func() error { return wantCount("alive", countState(peers[0], peer.Alive), 5) })
	if names := peerNames(peers[0].mesh.Peers()); !slices.Equal(names, []string{"p000", "p001", "p002", "p003", "p004"}) {
		t.Errorf("Peers lists %v; want this peer first, then the others by name", names)
	}
	// Every change of liveness below moves LivenessGen, and Gen.
	gen, allGen := peers[0].mesh.LivenessGen(), peers[0].mesh.Gen()
	genMoved := func(what string) {
		t.Helper()
		if g := peers[0].mesh.LivenessGen(); g == gen {
			t.Errorf("LivenessGen still %d after %s", g, what)
		} else {
			gen = g
		}
		if g := peers[0].mesh.Gen(); g == allGen {
			t.Errorf("Gen still %d after %s", g, what)
		} else {
			allGen = g
		}
	}
	// gone waits until p000 sees name gone, and returns the state it shows.
	gone := func(name string, want ...peer.State) peer.State {
		t.Helper()
		last := peer.State("")
		testutil.Eventually(t, 20*time.Second, name+" seen gone", func() error {
			for _, i := range peers[0].mesh.Peers() {
				if i.Name == name {
					if last = i.State; !slices.Contains(want, i.State) {
						return fmt.Errorf("state %q; want one of %q", i.State, want)
					}
					return nil
				}
			}
			return errors.New("not listed")
		})
		return last
	}
	// Peer 4 stops (SIGTERM): a stop, not a leave. "stopped" needs the
	// notice to arrive; a lost one makes it "dead", also a peer that still
	// owns its space. Never "left".
	if !peers[0].mesh.Reachable(peers[4].mesh.cfg.ID) || peers[0].mesh.Reachable(peer.ID(0xdead)) {
		t.Errorf("Reachable: alive p004 %v, unknown ID %v; want true, false", peers[0].mesh.Reachable(peers[4].mesh.cfg.ID), peers[0].mesh.Reachable(peer.ID(0xdead)))
	}
	stopped := peers[4]
	stopped.cancel()
	<-stopped.done
	stopped.cancel = nil
	t.Logf("p000 sees the stopped p004 as %q", gone("p004", peer.Stopped, peer.Dead))
	genMoved("p004 stopped")
	if peers[0].mesh.Reachable(peers[4].mesh.cfg.ID) {
		t.Error("Reachable: the stopped p004 is still reachable")
	}
	// Peer 3 leaves for good (`weft reset`).
	victim := peers[3]
	victim.mesh.Leaving()
	victim.cancel()
	<-victim.done // Run leaves gracefully; that is the "left" path
	victim.cancel = nil
	t.Logf("p000 sees the departed p003 as %q", gone("p003", peer.Left, peer.Dead))
	genMoved("p003 left")
	// p001 hears of both on its own time.
	testutil.Eventually(t, 20*time.Second, "p001 to see 3 alive", func() error {
		return wantCount("alive", countState(peers[1], peer.Alive), 3)
	})
	// Peer 2 crashes: its memberlist stops without a goodbye.
	crashed := peers[2]
	crashed.mesh.Shutdown() // Run is stopped only at cleanup: no goodbye was said
	testutil.Eventually(t, 20*time.Second, "peer 2 seen dead", func() error {
		for _, i := range peers[0].mesh.Peers() {
			if i.Name == "p002" {
				if i.State != peer.Dead {
					return fmt.Errorf("state %q", i.State)
				}
				return nil
			}
		}
		return errors.New("not listed")
	})
	genMoved("p002 dead")
	// The departed peer stays listed until forgotten.
	peers[0].mesh.Forget("p003")
	genMoved("p003 forgotten")
	for _, i := range peers[0].mesh.Peers() {
		if i.Name == "p003" {
			t.Errorf("p003 still listed after Forget")
		}
	}
}

func TestSecretMismatchNeverJoins(t *testing.T) {
	var mnet gossiptest.Network
	a, b := mnet.NewTransport("a"), mnet.NewTransport("b")
	mk := func(name string, tr *gossiptest.Transport, secret string) *Mesh {
		cfg := DefaultConfig()
		cfg.Name, cfg.ID = name, peer.ID(len(name)+7)
		if secret != "" {
			cfg.Secret = []byte(secret)
		}
		cfg.Memberlist = fastTimers(tr)
		m, err := New(cfg)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		t.Cleanup(func() { m.Shutdown() })
		return m
	}
	ma := mk("a", a, "the-right-secret-0123456789")
	for _, tc := range []struct{ name, secret string }{{"wrong", "a-wrong-secret-0123456789"}, {"none", ""}} {
		t.Run(tc.name, func(t *testing.T) {
			mb := mk("b", b, tc.secret)
			_, err := mb.Join([]string{a.Addr()})
			if err == nil {
				t.Fatalf("Join with %s secret succeeded", tc.name)
			}
			t.Logf("join error: %v", err)
			if !errors.Is(err, ErrRefused) {
				t.Errorf("join error %q is not ErrRefused", err)
			}
			if !strings.Contains(err.Error(), "secret") {
				t.Errorf("join error %q does not name the secret", err)
			}
			if n := ma.ml.NumMembers(); n != 1 {
				t.Errorf("a has %d members; want 1", n)
			}
			mb.Shutdown()
		})
		b = mnet.NewTransport("b-" + tc.name)
	}
}

// A stop while a reconnect round waits out a dial to an unreachable
// target starts no further round: the stop waits for that round alone.
// (The loop used to run rounds itself, so with the ticker due as well it
// picked another round half the time, 10 s each; `weft reset` timed out.)
func TestStopStartsNoReconnectRound(t *testing.T) {
	mnet := gossiptest.Network{Blackhole: true}
	tr := mnet.NewTransport("a")
	cfg := DefaultConfig()
	cfg.Name, cfg.ID = "a", peer.ID(4242)
	cfg.ReconnectEvery = 5 * time.Millisecond // always due when a round ends
	fast := fastTimers(tr)
	cfg.Memberlist = func(c *memberlist.Config) { fast(c); c.TCPTimeout = time.Second }
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m.SetTargets([]string{"127.0.0.1:9"}) // nobody: each dial hangs 1 s
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	// Stop just after a dial begins: its round is then under way for the
	// whole TCP timeout, so no round can begin between the stop and atStop.
	waitDials := func(n uint64) uint64 {
		for deadline := time.Now().Add(30 * time.Second); tr.Dials() < n; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d reconnect dials in 30 s; want %d", tr.Dials(), n)
			}
		}
		return tr.Dials()
	}
	waitDials(waitDials(1) + 1)
	cancel()
	atStop := tr.Dials()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := tr.Dials(); n != atStop {
		t.Errorf("%d dials after the stop; want none (a reconnect round began after ctx was done)", n-atStop)
	}
}

// newTestMesh makes a mesh of cfg on tr with the tests' fast timers, then
// tune; the caller runs it.
func newTestMesh(t *testing.T, cfg Config, tr *gossiptest.Transport, tune func(*memberlist.Config)) *Mesh {
	t.Helper()
	fast := fastTimers(tr)
	cfg.Memberlist = func(c *memberlist.Config) {
		fast(c)
		if tune != nil {
			tune(c)
		}
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%s): %v", cfg.Name, err)
	}
	return m
}

// runMesh starts a mesh named name on tr with fast timers, conf and tune
// (either may be nil) applied, running until the test ends.
func runMesh(t *testing.T, name string, tr *gossiptest.Transport, conf func(*Config), tune func(*memberlist.Config)) *Mesh {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Name, cfg.ID = name, peer.ID(len(name)+100)
	if conf != nil {
		conf(&cfg)
	}
	m := newTestMesh(t, cfg, tr, tune)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return m
}

// A peer alone retries its targets fast: its PEER, started a moment
// later (a mass start), is joined long before ReconnectEvery (here a
// minute, past the test's deadline).
func TestJoinRetriedFastWhileAlone(t *testing.T) {
	var mnet gossiptest.Network
	ta := mnet.NewTransport("a")
	bAddr := netip.MustParseAddrPort("127.0.0.1:40123")
	mk := func(name string, tr *gossiptest.Transport) *Mesh {
		return runMesh(t, name, tr, func(cfg *Config) { cfg.ReconnectEvery = time.Minute }, nil)
	}
	a := mk("a", ta)
	a.SetTargets([]string{bAddr.String()})
	// Wait for a failed dial or two (nobody listens at b yet).
	for deadline := time.Now().Add(30 * time.Second); ta.Dials() < 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d join dials in 30 s while alone; want 2", ta.Dials())
		}
	}
	mk("b", mnet.NewTransportAt("b", bAddr))
	testutil.Eventually(t, 30*time.Second, "a to join b, started after a's first tries", func() error {
		for _, p := range a.Peers() {
			if p.Name == "b" && p.State == peer.Alive {
				return nil
			}
		}
		return errors.New("b not alive at a")
	})
}

// SetMeta does not wait for memberlist to finish gossiping the update:
// with no gossip round or probe ever due (broadcasts ride on both), the
// update's retransmissions never end, and SetMeta still returns without
// error (it used to wait 5 s and fail). The other peer gets the new
// metadata by push-pull here.
func TestSetMetaDoesNotWait(t *testing.T) {
	var mnet gossiptest.Network
	ta, tb := mnet.NewTransport("a"), mnet.NewTransport("b")
	quiet := func(c *memberlist.Config) { c.GossipInterval, c.ProbeInterval = time.Hour, time.Hour }
	a := runMesh(t, "a", ta, nil, quiet)
	b := runMesh(t, "b", tb, nil, quiet)
	if _, err := a.Join([]string{tb.Addr()}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, "a to see b alive", func() error {
		for _, p := range a.Peers() {
			if p.Name == "b" && p.State == peer.Alive {
				return nil
			}
		}
		return errors.New("b not alive at a")
	})
	meta := a.Peers()[0].Meta
	meta.Joined = true
	genA, genB := a.Gen(), b.Gen()
	if err := a.SetMeta(meta); err != nil {
		t.Fatalf("SetMeta = %v; want it queued without waiting for gossip", err)
	}
	if !a.Peers()[0].Meta.Joined || !a.Meta().Joined {
		t.Errorf("a's own view lacks the new metadata: Peers()[0] %+v, Meta() %+v", a.Peers()[0].Meta, a.Meta())
	}
	if g := a.Gen(); g == genA {
		t.Errorf("a's Gen still %d after its metadata changed", g)
	}
	testutil.Eventually(t, 30*time.Second, "b to see a's new metadata", func() error {
		for _, p := range b.Peers() {
			if p.Name == "a" && p.Meta.Joined {
				return nil
			}
		}
		return errors.New("not yet")
	})
	if g := b.Gen(); g == genB {
		t.Errorf("b's Gen still %d after a's metadata reached it", g)
	}
	// Neither the same metadata again nor a probe's reading is a change.
	genA = a.Gen()
	if err := a.SetMeta(meta); err != nil {
		t.Fatal(err)
	}
	a.pinged("b", time.Millisecond)
	if g := a.Gen(); g != genA {
		t.Errorf("a's Gen moved from %d to %d by the same metadata and a probe", genA, g)
	}
}
