package ipam_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/ipam"
	"github.com/weftmesh/weft/ipam/ipamtest"
	"github.com/weftmesh/weft/peer"
)

// tb is the part of testing.TB (and rapid.T) the cluster helpers need.
type tb interface {
	Helper()
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
}

// cluster runs n Allocators on an in-memory network, each with its own
// bbolt file that survives restarts.
type cluster struct {
	t    tb
	net  *ipamtest.Network
	dir  string
	rng  netip.Prefix
	init ipam.Init
	ids  []peer.ID

	inits map[peer.ID]ipam.Init // per-peer overrides of init

	mu      sync.Mutex // guards following
	running map[peer.ID]*member
	removed map[peer.ID]bool // reclaimed or handed off: never restarted
}

type member struct {
	a    *ipam.Allocator
	stop context.CancelFunc
	done chan struct{}
}

func peerID(i int) peer.ID { return peer.ID(0x1000 + i) }

func newCluster(t tb, dir string, n int, rng string, init ipam.Init, seed uint64) *cluster {
	t.Helper()
	c := &cluster{
		t: t, net: ipamtest.NewNetwork(seed), dir: dir, rng: netip.MustParsePrefix(rng), init: init,
		running: map[peer.ID]*member{}, removed: map[peer.ID]bool{},
	}
	for i := range n {
		c.ids = append(c.ids, peerID(i))
	}
	return c
}

func (c *cluster) config(id peer.ID) ipam.Config {
	cfg := ipam.DefaultConfig()
	cfg.Range = c.rng
	cfg.Init = c.init
	if in, ok := c.inits[id]; ok {
		cfg.Init = in
	}
	cfg.Self = id
	cfg.Name = name(id)
	cfg.DBPath = filepath.Join(c.dir, id.String()+".db")
	cfg.BootstrapInterval = 20 * time.Millisecond
	cfg.RequestTimeout = 300 * time.Millisecond
	cfg.RebroadcastInterval = 0
	cfg.NoSync = true
	return cfg
}

func name(id peer.ID) string { return fmt.Sprintf("h%d", uint64(id)-0x1000) }

// start opens (or reopens) id's allocator, runs it and tells everyone.
func (c *cluster) start(id peer.ID) *ipam.Allocator {
	c.t.Helper()
	a := c.startQuiet(id)
	c.setPeers()
	return a
}

// startQuiet is start without the SetPeers round.
func (c *cluster) startQuiet(id peer.ID) *ipam.Allocator {
	c.t.Helper()
	a, err := ipam.New(c.config(id), c.net.Endpoint(id))
	if err != nil {
		c.t.Fatalf("New(%s) = %v", id, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &member{a: a, stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		_ = a.Run(ctx)
	}()
	c.mu.Lock()
	c.running[id] = m
	c.mu.Unlock()
	c.net.Attach(id, a)
	return a
}

// stopPeer crashes id: detach, stop Run, close the store.
func (c *cluster) stopPeer(id peer.ID) {
	c.t.Helper()
	c.mu.Lock()
	m, ok := c.running[id]
	delete(c.running, id)
	c.mu.Unlock()
	if !ok {
		return
	}
	c.net.Detach(id)
	m.stop()
	<-m.done
	if err := m.a.Close(); err != nil {
		c.t.Fatalf("Close(%s) = %v", id, err)
	}
	c.setPeers()
}

func (c *cluster) get(id peer.ID) *ipam.Allocator {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m, ok := c.running[id]; ok {
		return m.a
	}
	return nil
}

func (c *cluster) live() []peer.ID {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []peer.ID
	for id := range c.running {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// setPeers tells every running allocator who is alive: running peers that
// are reachable from it (a partition looks like death to memberlist).
func (c *cluster) setPeers() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, m := range c.running {
		var infos []peer.Info
		for _, other := range c.ids {
			if c.removed[other] {
				continue // reclaimed: the daemon forgets it
			}
			st := peer.Dead
			if _, ok := c.running[other]; ok && c.net.Connected(id, other) {
				st = peer.Alive
			}
			infos = append(infos, peer.Info{Name: name(other), ID: other, State: st})
		}
		m.a.SetPeers(infos)
	}
}

func (c *cluster) close() {
	for _, id := range c.live() {
		c.stopPeer(id)
	}
	c.net.Close()
}

// eventually is testutil.Eventually for the cluster's tb, which is a
// rapid.T in the property tests and so not a testing.TB.
func eventually(t tb, d time.Duration, what string, cond func() bool) {
	t.Helper()
	if err := testutil.Poll(d, func() error {
		if !cond() {
			return errors.New("not yet")
		}
		return nil
	}); err != nil {
		t.Fatalf("timed out after %v waiting for %s", d, what)
	}
}

func (c *cluster) waitReady(d time.Duration, ids ...peer.ID) { c.waitReadySync(d, true, ids...) }

func (c *cluster) waitReadySync(d time.Duration, sync bool, ids ...peer.ID) {
	c.t.Helper()
	eventually(c.t, d, "ring ready", func() bool {
		if sync {
			c.net.Sync() // memberlist's push-pull on join and periodically
		}
		for _, id := range ids {
			if a := c.get(id); a == nil || a.Status().Status != "ready" {
				return false
			}
		}
		return true
	})
}

// converged reports whether every running peer has the same ring.
func (c *cluster) converged() bool {
	var first []ipam.RunStatus
	for i, id := range c.live() {
		a := c.get(id)
		if a == nil {
			return false
		}
		runs := a.Status().Runs
		for j := range runs {
			runs[j].OwnerName, runs[j].Reachable, runs[j].Free = "", false, 0
		}
		if i == 0 {
			first = runs
		} else if !slices.Equal(first, runs) {
			return false
		}
	}
	return true
}

// heal removes partitions and runs anti-entropy until the rings converge.
func (c *cluster) healAndConverge(d time.Duration) {
	c.t.Helper()
	c.net.Heal()
	c.setPeers()
	err := testutil.Poll(d, func() error {
		c.net.Sync()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = c.net.WaitIdle(ctx)
		if !c.converged() {
			return errors.New("rings differ")
		}
		return nil
	})
	if err != nil {
		for _, id := range c.live() {
			st := c.get(id).Status()
			c.t.Logf("peer %s: %s owned %d allocated %d", id, st.Status, st.Owned, st.Allocated)
			for _, r := range st.Runs {
				c.t.Logf("   %s-%s %s free %d", r.Start, r.End, r.Owner, r.Free)
			}
		}
		c.t.Fatalf("rings did not converge within %v; rejected messages: %v", d, c.net.Rejected())
	}
}

// checkUnique fails if two live allocations anywhere share an address, or
// one lies outside the range or in a run its peer does not own.
func (c *cluster) checkUnique() {
	c.t.Helper()
	seen := map[netip.Addr]string{}
	for _, id := range c.live() {
		a := c.get(id)
		st := a.Status()
		for _, al := range st.Allocations {
			key := id.String() + "/" + al.ID
			if prev, dup := seen[al.Addr.Addr()]; dup {
				c.t.Fatalf("address %s allocated twice: %s and %s", al.Addr, prev, key)
			}
			seen[al.Addr.Addr()] = key
			if !c.rng.Contains(al.Addr.Addr()) || al.Addr.Bits() != c.rng.Bits() {
				c.t.Fatalf("allocation %s = %s outside range %s", key, al.Addr, c.rng)
			}
		}
	}
}

// ownerOtherThan returns the owner with most space that is none of not.
func (c *cluster) ownerOtherThan(not ...peer.ID) peer.ID {
	c.t.Helper()
	var best peer.ID
	var most int64
	for _, o := range c.get(c.live()[0]).Status().Owners {
		if !slices.Contains(not, o.ID) && o.Owned > most {
			best, most = o.ID, o.Owned
		}
	}
	if best == 0 {
		c.t.Fatalf("no owner besides %v", not)
	}
	return best
}
