package gossip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/weftmesh/weft/peer"
)

// Mesh is this peer's membership in the weft mesh.
type Mesh struct {
	cfg   Config
	log   *slog.Logger
	ml    *memberlist.Memberlist
	local netip.AddrPort // the advertised address, read at New
	queue *memberlist.TransmitLimitedQueue

	pubMu sync.Mutex // serializes SetMeta

	// chMu guards channels and channelOrder: they are written only before
	// Run, but memberlist already listens then, and a remote push-pull may
	// read them from its own goroutine.
	chMu         sync.RWMutex
	channels     map[string]*Channel
	channelOrder []string

	bigOut   chan []byte   // large broadcasts waiting to be sent by TCP
	digestIn chan digest   // anti-entropy digests received, for antiEntropy
	seen     *seenCache    // broadcast frames already relayed (non-Epidemic handlers)
	relayed  atomic.Uint64 // broadcasts this peer forwarded (epidemic)
	repairs  atomic.Uint64 // channel states found different by anti-entropy
	// memberSyncs counts membership push-pulls started by anti-entropy;
	// lastMemberSync is the UnixNano time of the last (membership.go).
	memberSyncs    atomic.Uint64
	lastMemberSync atomic.Int64
	wg             sync.WaitGroup // anti-entropy repair senders
	changed        chan struct{}  // membership or metadata changed (cap 1)
	badFrames      atomic.Uint64  // undecodable messages received
	started        atomic.Bool
	shut           atomic.Bool // Shutdown was called: Run must not leave
	leaving        atomic.Bool // Leaving was called: Run says goodbye, not "stopping"

	mu        sync.Mutex // guards following
	metaBytes []byte
	meta      peer.Meta
	peers     map[string]*entry // by name, every peer ever seen, not forgotten
	targets   []string          // addresses to (re)join
	joinErr   map[string]string // target -> last join error
	// alive caches the alive peers' nodes for randomAlive; rebuilt when
	// aliveDirty (set by every membership event).
	alive      []*memberlist.Node
	aliveDirty bool
	memberHash uint64 // XOR of the entries' hash (membership.go)
	// names is the peers' names sorted, for Peers; nil after a peer was
	// added or forgotten. Peers is called on every membership change, and
	// sorting hundreds of entries each time was the largest CPU cost of a
	// mass join in the simulator.
	names []string
	// liveGen counts the events that took a known peer up or down or
	// forgot one (not the arrival of a new peer): see LivenessGen.
	liveGen uint64
	// gen counts every change of what Peers returns but the readings
	// LastSeen and RTT: see Gen.
	gen uint64
}

type entry struct {
	hash     uint64 // memberHash term of this peer: 0 unless up (membership.go)
	info     peer.Info
	saidBye  bool             // the peer announced that it leaves the mesh for good
	saidStop bool             // the peer announced that its control plane stops
	node     *memberlist.Node // last known memberlist node
}

// New creates the memberlist and binds its ports; it does not join anyone.
func New(cfg Config) (*Mesh, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "gossip")
	m := &Mesh{
		cfg:      cfg,
		log:      log,
		channels: map[string]*Channel{},
		bigOut:   make(chan []byte, 64),
		digestIn: make(chan digest, 256),
		seen:     newSeenCache(),
		changed:  make(chan struct{}, 1),
		peers:    map[string]*entry{},
		joinErr:  map[string]string{},
	}
	meta, err := EncodeMeta(cfg.ID, cfg.Meta)
	if err != nil {
		return nil, err
	}
	m.metaBytes, m.meta = meta, cfg.Meta

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.Name
	mc.BindAddr = cfg.BindAddr
	mc.BindPort = cfg.BindPort
	mc.AdvertisePort = cfg.BindPort
	if cfg.AdvertisePort != 0 {
		mc.AdvertisePort = cfg.AdvertisePort
	}
	mc.AdvertiseAddr = cfg.AdvertiseAddr
	mc.Delegate = delegate{m}
	mc.Events = delegate{m}
	mc.Ping = delegate{m}
	mc.Logger = newStdLogger(log)
	if cfg.Secret != nil {
		key, err := gossipKey(cfg.Secret)
		if err != nil {
			return nil, err
		}
		mc.SecretKey = key
		mc.GossipVerifyIncoming = true
		mc.GossipVerifyOutgoing = true
	}
	if cfg.PushPullInterval > 0 {
		mc.PushPullInterval = cfg.PushPullInterval
	}
	tuneFailureDetection(mc)
	if cfg.Memberlist != nil {
		cfg.Memberlist(mc)
	}
	var own *netTransport // ours, not a test's
	if mc.Transport == nil {
		t, err := newNetTransport(mc.BindAddr, mc.BindPort, log)
		if err != nil {
			return nil, fmt.Errorf("start gossip: %w", err)
		}
		if mc.BindPort == 0 {
			mc.BindPort = t.Port()
		}
		if mc.AdvertisePort == 0 {
			mc.AdvertisePort = t.Port()
		}
		mc.Transport, own = t, t
	}
	m.queue = &memberlist.TransmitLimitedQueue{
		NumNodes:       func() int { return m.ml.NumMembers() },
		RetransmitMult: mc.RetransmitMult,
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		if own != nil {
			_ = own.Shutdown()
		}
		return nil, fmt.Errorf("start gossip on %s:%d: %w", cfg.BindAddr, cfg.BindPort, err)
	}
	m.ml = ml
	// Read once, before anything can join: memberlist rewrites its local
	// node in place on every UpdateNode (SetMeta), so reading it later
	// races with a metadata update. The advertised address never changes.
	n := ml.LocalNode()
	a, _ := netip.AddrFromSlice(n.Addr)
	m.local = netip.AddrPortFrom(a.Unmap(), n.Port)
	return m, nil
}

// Channel registers a replicated-state channel. Call it before Run.
func (m *Mesh) Channel(name string, h Handler) *Channel {
	if m.started.Load() {
		panic("gossip: Channel called after Run")
	}
	if len(name) == 0 || len(name) > maxChanName || name[0] == '~' {
		panic("gossip: channel name must be 1-32 bytes, not starting with '~'")
	}
	c := &Channel{mesh: m, name: name, handler: h}
	c.inbox.init(m.cfg.InboxSize)
	m.chMu.Lock()
	m.channels[name] = c
	m.channelOrder = append(m.channelOrder, name)
	m.chMu.Unlock()
	return c
}

// channel returns the registered channel called name, or nil.
func (m *Mesh) channel(name string) *Channel {
	m.chMu.RLock()
	defer m.chMu.RUnlock()
	return m.channels[name]
}

// channelList returns the registered channels in registration order.
func (m *Mesh) channelList() []*Channel {
	m.chMu.RLock()
	defer m.chMu.RUnlock()
	cs := make([]*Channel, 0, len(m.channelOrder))
	for _, name := range m.channelOrder {
		cs = append(cs, m.channels[name])
	}
	return cs
}

// While this peer is alone it retries its targets after joinRetryMin,
// then twice that, then every joinRetryMax; once it has met a peer, every
// ReconnectEvery (memberlist then finds the rest). When many peers start at
// once (a DaemonSet rolled out on every node, make scale-real's 40
// launches), a peer's PEER is often not listening yet and refuses the
// first dial at once: a full ReconnectEvery (5 s) before the second try
// held 40 peers ~12 s from seeing each other, and a group of peers cut off
// that long may divide a ring of their own (ipam/bootstrap.go: peers
// launched with different PEER lists and the default consensus).
const (
	joinRetryMin = 250 * time.Millisecond
	joinRetryMax = time.Second
)

// Run drives the channels, large broadcasts, reconnection of targets and
// the liveness table until ctx is done; then it tells the others why it
// goes (a stop, or a leave after Leaving), leaves memberlist gracefully and
// shuts it down. It returns after all its goroutines exit.
func (m *Mesh) Run(ctx context.Context) error {
	m.started.Store(true)
	var wg sync.WaitGroup
	for _, c := range m.channelList() {
		wg.Add(1)
		go func() { defer wg.Done(); c.run(ctx) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); m.sendLarge(ctx) }()
	if m.cfg.DigestInterval > 0 {
		wg.Add(1)
		go func() { defer wg.Done(); m.antiEntropy(ctx) }()
	}

	// Reconnect rounds run beside this loop, one at a time: a round that
	// waits out a dial to an unreachable target (memberlist's TCP timeout,
	// 10 s) must not hold the loop, or a stop would wait for the next
	// round too whenever the ticker and ctx are ready at once.
	var rounds sync.WaitGroup
	var busy atomic.Bool
	round := func() {
		if ctx.Err() != nil || !busy.CompareAndSwap(false, true) {
			return
		}
		rounds.Add(1)
		go func() { defer rounds.Done(); defer busy.Store(false); m.reconnect() }()
	}
	reconnect := time.NewTimer(0) // the first round at once
	defer reconnect.Stop()
	retry := joinRetryMin
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-reconnect.C:
			alone := m.randomAlive() == nil
			round()
			reconnect.Reset(m.cfg.ReconnectEvery)
			if alone {
				reconnect.Reset(min(retry, joinRetryMax, m.cfg.ReconnectEvery))
				retry *= 2
			} else {
				retry = joinRetryMin
			}
		}
	}
	wg.Wait()
	rounds.Wait() // a round under way ends with its dials
	m.wg.Wait()
	if m.shut.Load() {
		return nil // crashed on purpose (Shutdown): no goodbye
	}
	m.sayBye(m.leaving.Load())
	if err := m.ml.Leave(2 * time.Second); err != nil {
		m.log.Warn("leave", "err", err)
	}
	return m.ml.Shutdown()
}

// Leaving marks this peer as leaving the mesh for good (`weft reset`): when
// Run ends, the others list it as "left" instead of "stopped". Without it,
// the end of Run is a stop of the control plane: the peer still owns its
// address space and its datapath keeps forwarding.
func (m *Mesh) Leaving() { m.leaving.Store(true) }

// sayBye tells every alive peer (best effort, by TCP, in parallel; each
// send bounded by memberlist's TCP timeout) why this peer goes, so they
// list it as "left" (leave) or "stopped" (stop) rather than "dead".
func (m *Mesh) sayBye(leave bool) {
	kind := byte(kindStop)
	if leave {
		kind = kindBye
	}
	f := appendFrame(nil, frame{kind: kind, channel: "mesh", origin: m.cfg.ID})
	var wg sync.WaitGroup
	for _, n := range m.aliveNodes() {
		wg.Add(1)
		go func() { defer wg.Done(); _ = m.ml.SendReliable(n, f) }()
	}
	wg.Wait()
}

// heardBye records that the peer with that ID goes: for good (a leave) or
// only its control plane (a stop).
func (m *Mesh) heardBye(id peer.ID, stop bool) {
	m.mu.Lock()
	for _, e := range m.peers {
		if e.info.ID != id {
			continue
		}
		e.saidBye, e.saidStop = !stop, stop
		if e.info.State == peer.Dead || e.info.State == peer.Left || e.info.State == peer.Stopped {
			e.info.State = goneState(e) // the leave overtook the goodbye
			m.gen++
		}
	}
	m.mu.Unlock()
}

// goneState is the state of a peer that memberlist no longer lists.
func goneState(e *entry) peer.State {
	switch {
	case e.saidBye:
		return peer.Left
	case e.saidStop:
		return peer.Stopped
	}
	return peer.Dead
}

// Shutdown stops memberlist without a graceful leave (tests simulating a
// crash); Run must not be running.
func (m *Mesh) Shutdown() error {
	m.shut.Store(true)
	return m.ml.Shutdown()
}

// sendLarge sends broadcasts too large for UDP to each alive peer by TCP.
func (m *Mesh) sendLarge(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case f := <-m.bigOut:
			for _, n := range m.aliveNodes() {
				if err := m.ml.SendReliable(n, f); err != nil {
					m.log.Debug("large broadcast", "to", n.Name, "err", err)
				}
			}
		}
	}
}

// Join contacts the given addresses (host or host:port) and joins the mesh
// through the first that answers. It returns how many were joined.
func (m *Mesh) Join(addrs []string) (int, error) {
	var n int
	var errs []error
	for _, a := range addrs {
		hp := withDefaultPort(a, m.cfg.BindPort)
		k, err := m.ml.Join([]string{hp})
		var why string
		var refused bool
		if err != nil {
			why, refused = explainJoinError(err, m.cfg.Secret != nil)
		}
		m.mu.Lock()
		if err != nil {
			m.joinErr[a] = why
		} else {
			delete(m.joinErr, a)
		}
		m.mu.Unlock()
		switch {
		case refused:
			errs = append(errs, fmt.Errorf("join %s: %w: %s", hp, ErrRefused, why))
			continue
		case err != nil:
			errs = append(errs, fmt.Errorf("join %s: %s", hp, why))
			continue
		}
		n += k
	}
	if n == 0 && len(addrs) > 0 {
		return 0, fmt.Errorf("%w: %w", ErrNoPeerJoined, errors.Join(errs...))
	}
	return n, nil
}

// explainJoinError turns memberlist's join failures into an operator's
// sentence. A remote that cannot decrypt our push-pull (wrong or missing
// secret) just drops the connection, so a reset or EOF during the exchange
// is reported as the likely secret mismatch it almost always is.
func explainJoinError(err error, haveSecret bool) (why string, refused bool) {
	s := strings.Join(strings.Fields(err.Error()), " ") // memberlist's multi-line errors on one line
	switch {
	case strings.Contains(s, "remote state is encrypted and encryption is not configured"):
		return s + " (the mesh uses a cluster secret: pass --password-file or WEFT_PASSWORD)", true
	case strings.Contains(s, "Encryption is configured but remote state is not encrypted"):
		return s + " (the remote peer runs --insecure but this peer has a cluster secret)", true
	case strings.Contains(s, "No installed keys could decrypt"), strings.Contains(s, "decrypt"):
		return s + " (wrong cluster secret: check --password-file / WEFT_PASSWORD)", true
	case strings.Contains(s, "EOF"), strings.Contains(s, "connection reset"), strings.Contains(s, "broken pipe"):
		if haveSecret {
			return s + " (the remote peer closed the connection during the encrypted handshake: wrong cluster secret? check --password-file / WEFT_PASSWORD)", true
		}
		return s + " (the remote peer closed the connection: it probably requires a cluster secret; pass --password-file or WEFT_PASSWORD)", true
	case strings.Contains(s, "connection refused"), strings.Contains(s, "i/o timeout"), strings.Contains(s, "no route"):
		return s + " (is weft running there and the gossip port reachable?)", false
	}
	return s, false
}

func withDefaultPort(a string, port int) string {
	if _, _, err := net.SplitHostPort(a); err == nil {
		return a
	}
	return net.JoinHostPort(a, strconv.Itoa(port))
}

// SetTargets replaces the addresses this peer keeps trying to be connected
// to (the PEER arguments and `weft connect`).
func (m *Mesh) SetTargets(addrs []string) {
	m.mu.Lock()
	m.targets = append([]string(nil), addrs...)
	for a := range m.joinErr {
		if !containsStr(addrs, a) {
			delete(m.joinErr, a)
		}
	}
	m.mu.Unlock()
}

func containsStr(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// Targets returns the current targets.
func (m *Mesh) Targets() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.targets...)
}

// JoinErrors returns, per target, why the last join attempt failed.
func (m *Mesh) JoinErrors() map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]string, len(m.joinErr))
	for k, v := range m.joinErr {
		out[k] = v
	}
	return out
}

// reconnect joins targets that are not alive members. While this peer is
// alone it also tries every address it has seen a peer at.
func (m *Mesh) reconnect() {
	alive := map[string]bool{}
	for _, n := range m.aliveNodes() {
		alive[n.Address()] = true
		alive[n.Addr.String()] = true
		alive[n.Name] = true
	}
	m.mu.Lock()
	var try []string
	for _, t := range m.targets {
		if !alive[t] && !alive[withDefaultPort(t, m.cfg.BindPort)] {
			try = append(try, t)
		}
	}
	m.mu.Unlock()
	// In parallel: an unreachable target holds its join for memberlist's
	// TCP timeout (10 s), and must not delay the others after a partition
	// heals.
	var wg sync.WaitGroup
	for _, t := range try {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := m.Join([]string{t}); err != nil {
				m.log.Warn("cannot join target", "target", t, "err", err)
			}
		}()
	}
	wg.Wait()
}

// Meta returns the metadata this peer publishes (what Peers()[0].Meta
// holds, without copying the peer table).
func (m *Mesh) Meta() peer.Meta {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.meta
}

// SetMeta publishes new metadata for this peer. It returns once the
// update is queued for gossip, without waiting for it to be sent.
//
// memberlist's UpdateNode queues the alive message carrying the new
// metadata before it waits, and the wait is only for that message's
// retransmissions to end (RetransmitMult·log N gossip rounds, behind
// whatever else is queued: seconds during a mass join), which nothing here
// needs. Waiting held the daemon's sync loop 5 s in a 40-peer start (its
// Joined flag), and its allocator saw no new peer meanwhile. So SetMeta
// waits as little as memberlist allows; the wait's timeout is UpdateNode's
// only error. Calls are serialized: each update reads the newest metadata
// and takes the next incarnation in one step, so an older one never wins.
func (m *Mesh) SetMeta(meta peer.Meta) error {
	b, err := EncodeMeta(m.cfg.ID, meta)
	if err != nil {
		return err
	}
	m.pubMu.Lock()
	defer m.pubMu.Unlock()
	m.mu.Lock()
	same := string(b) == string(m.metaBytes)
	m.metaBytes, m.meta = b, meta
	if !same {
		m.gen++
	}
	m.mu.Unlock()
	if same {
		return nil
	}
	// Queued; only the wait timed out. Any other error (a memberlist
	// upgrade that changed UpdateNode) is returned, never ignored.
	if err := m.ml.UpdateNode(time.Nanosecond); err != nil && err.Error() != updateTimedOut {
		return fmt.Errorf("publish metadata: %w", err)
	}
	m.signal()
	return nil
}

// updateTimedOut is the error memberlist's UpdateNode (v0.7.0) returns
// when its wait for the update's broadcast times out, after queueing it.
const updateTimedOut = "timeout waiting for update broadcast"

// Changed receives a value whenever membership or metadata change.
func (m *Mesh) Changed() <-chan struct{} { return m.changed }

func (m *Mesh) signal() {
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// LocalAddr returns the address other peers reach this one on.
func (m *Mesh) LocalAddr() netip.AddrPort { return m.local }

// BadFrames returns how many undecodable messages were received.
func (m *Mesh) BadFrames() uint64 { return m.badFrames.Load() }

// Relayed returns how many broadcasts this peer forwarded onward.
func (m *Mesh) Relayed() uint64 { return m.relayed.Load() }

// MemberSyncs returns how many membership push-pulls anti-entropy started.
func (m *Mesh) MemberSyncs() uint64 { return m.memberSyncs.Load() }

// Repairs returns how many times anti-entropy found a channel's state
// different from a peer's and sent it what it may lack.
func (m *Mesh) Repairs() uint64 { return m.repairs.Load() }

// observe records a memberlist event in the peer table.
func (m *Mesh) observe(n *memberlist.Node, ev string) {
	if n.Name == m.cfg.Name {
		return
	}
	id, meta, err := DecodeMeta(n.Meta)
	if err != nil {
		m.log.Warn("peer with bad metadata", "peer", n.Name, "err", err)
	}
	m.mu.Lock()
	e := m.peers[n.Name]
	if e == nil {
		e = &entry{}
		m.peers[n.Name] = e
		m.names = nil
	}
	if err == nil {
		if e.info.ID != 0 && e.info.ID != id {
			m.log.Info("peer restarted with a new identity", "peer", n.Name, "old", e.info.ID, "new", id)
			m.liveGen++ // the old identity is gone
		}
		e.info.ID, e.info.Meta = id, meta
	}
	// memberlist mutates *n later under its own lock: keep a copy, of the
	// address only (the metadata is decoded in e.info; a peer's node is
	// only ever used to reach it).
	cp := *n
	cp.Meta = nil
	e.node = &cp
	m.aliveDirty = true
	e.info.Name = n.Name
	if a, ok := netip.AddrFromSlice(n.Addr); ok {
		e.info.Addr = a.Unmap()
	}
	prev := e.info.State
	// memberlist's Node.State is not maintained in event callbacks: the
	// event itself says what happened. A leave is "left" when the peer said
	// goodbye first (see Run), "dead" when the failure detector decided.
	if ev != "leave" {
		e.info.State = peer.Alive
		if ev == "join" {
			e.saidBye, e.saidStop = false, false // a new life
		}
	} else {
		e.info.State = goneState(e)
	}
	if e.info.State == peer.Alive {
		e.info.LastSeen = time.Now()
	}
	m.rehashLocked(e, n.Meta)
	if prev != "" && prev.Up() != e.info.State.Up() {
		m.liveGen++
	}
	m.gen++
	info := e.info
	m.mu.Unlock()
	if prev != info.State {
		m.log.Info("peer "+string(info.State), "peer", n.Name, "id", info.ID, "addr", info.Addr, "event", ev)
	}
	m.signal()
}

// Peers returns every known peer, this one included (first), sorted by name.
func (m *Mesh) Peers() []peer.Info {
	self := peer.Info{Name: m.cfg.Name, ID: m.cfg.ID, Addr: m.LocalAddr().Addr(), State: peer.Alive, LastSeen: time.Now()}
	m.mu.Lock()
	defer m.mu.Unlock()
	self.Meta = m.meta
	if m.names == nil {
		m.names = slices.Sorted(maps.Keys(m.peers))
	}
	out := make([]peer.Info, 0, len(m.names)+1)
	out = append(out, self)
	for _, n := range m.names {
		out = append(out, m.peers[n].info)
	}
	return out
}

// LivenessGen returns a number that changes whenever a peer this mesh
// already listed went up or down, took a new identity, or was forgotten;
// a new peer does not change it. A caller that acts on liveness changes of the peers it knows
// compares it with the last value it acted on instead of reading Peers.
func (m *Mesh) LivenessGen() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.liveGen
}

// Gen returns a number that changes whenever what Peers returns changes,
// but for the readings LastSeen and RTT (every probe refreshes them): a
// caller that acts on the peer list compares it with the value it last
// acted on instead of reading Peers. Read it before Peers: a change in
// between then shows as a new number next time.
func (m *Mesh) Gen() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.gen
}

// Forget drops dead or departed peers from the table (and from targets).
// Alive peers are not forgotten: they would reappear at once.
func (m *Mesh) Forget(names ...string) {
	m.mu.Lock()
	for _, n := range names {
		if e := m.peers[n]; e != nil && !e.info.State.Up() {
			m.memberHash ^= e.hash
			delete(m.peers, n)
			m.aliveDirty = true
			m.names = nil
			m.liveGen++
			m.gen++
		}
	}
	m.mu.Unlock()
	m.signal()
}

// aliveNodes returns copies of the alive peers' memberlist nodes.
// memberlist's own Members() hands out pointers it keeps mutating, so weft
// reads only the copies its event callbacks took.
func (m *Mesh) aliveNodes() []*memberlist.Node {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*memberlist.Node
	for _, e := range m.peers {
		if e.node != nil && e.info.State == peer.Alive {
			out = append(out, e.node)
		}
	}
	return out
}

// pinged records a successful probe: the peer was just heard from.
func (m *Mesh) pinged(name string, rtt time.Duration) {
	m.mu.Lock()
	if e := m.peers[name]; e != nil {
		e.info.LastSeen = time.Now()
		e.info.RTT = rtt
	}
	m.mu.Unlock()
}

// Reachable reports whether peer id is up in the membership now, so that
// a message to it can be sent (Channel.SendTo).
func (m *Mesh) Reachable(id peer.ID) bool { return m.nodeByID(id) != nil }

func (m *Mesh) nodeByID(id peer.ID) *memberlist.Node {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range m.peers {
		if e.info.ID == id && e.node != nil && e.info.State.Up() {
			return e.node
		}
	}
	return nil
}
