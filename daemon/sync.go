package daemon

import (
	"context"
	"maps"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/weftmesh/weft/dns"
	"github.com/weftmesh/weft/ipam"
	"github.com/weftmesh/weft/peer"
	"github.com/weftmesh/weft/router"
)

// The sync loop is the only place where subsystems meet. Each pass reads
// the full current state (membership, ring, bridge address) and hands each
// consumer its full desired state; every consumer is idempotent, and a
// periodic pass repairs anything a missed signal left behind.
//
// A pass reads and hands over O(N) state (the peer list, the routing
// table, the owner table, the router's plan), so the ticker's pass is
// skipped when nothing it reads changed since the last pass: the mesh's
// and the allocators' generations are the same, the last pass finished
// cleanly, and the last full pass is younger than fullPassEvery. Every
// other wake (a membership or ring signal, a kick, a switch) runs a full
// pass. What a pass reads without a generation (the bridge address, our
// own report, the underlay pods, the Kubernetes targets) kicks the loop
// when it changes.

const syncEvery = 2 * time.Second

// fullPassEvery bounds how long the ticker's passes may be skipped: the
// owner table's LastSeen steps (once a minute) and anything a missed
// kick left behind are picked up by then.
const fullPassEvery = 10 * time.Second

// syncGap is the least time between two passes: a pass reads and hands
// over O(N) state, and in a mass join of N peers each peer sees O(N)
// membership and ring events within seconds; passes back to back would
// cost O(N²) per peer. Events that arrive during the gap are coalesced
// into the next pass (their signals have capacity 1).
const syncGap = 500 * time.Millisecond

func (d *Daemon) syncLoop(ctx context.Context) error {
	t := time.NewTicker(syncEvery)
	defer t.Stop()
	woken := true // by something other than the ticker: a full pass
	for {
		if woken || d.passDue() {
			d.sync()
		} else {
			d.syncOwnedNames() // local, O(pods here)
			d.mu.Lock()
			d.syncSkipped++
			d.mu.Unlock()
		}
		last := time.Now()
		urgent := false // a report takes effect (switch.go): no gap
		woken = true
		select {
		case <-ctx.Done():
			return nil
		case <-d.mesh.Changed():
		case <-d.alloc.Changed():
		case <-d.underlayChanged():
		case <-d.kick:
		case <-d.switchKick:
			urgent = true
		case <-t.C:
			woken = false
		}
		// Liveness does not wait for the gap: the allocators judge
		// reclaims and donations by who is up, and an operator who sees a
		// peer dead in status must be able to rmpeer it at once.
		d.syncLiveness()
		if wait := syncGap - time.Since(last); wait > 0 && !urgent {
			gap := time.After(wait)
			for waiting := true; waiting; {
				select {
				case <-ctx.Done():
					return nil
				case <-d.mesh.Changed():
					d.syncLiveness()
				case <-d.switchKick:
					waiting = false
				case <-gap:
					waiting = false
				}
			}
		}
	}
}

// syncLiveness hands the membership to the allocators at once when a peer
// they know went up or down; peers new to them (a mass join brings
// hundreds) wait for the next pass. Only the sync loop calls it.
func (d *Daemon) syncLiveness() {
	// Most membership changes of a mass join are arrivals, which do not
	// concern the allocators yet: skip them without copying the table.
	g := d.mesh.LivenessGen()
	if g == d.liveGen {
		return
	}
	d.liveGen = g
	peers := d.mesh.Peers()
	if !livenessChanged(d.allocUp, peers) {
		return
	}
	d.handLiveness(peers)
}

// handLiveness hands the membership to the allocators and remembers who
// was up, and since when (the adjacency loop reads it). Only the sync loop
// calls it.
func (d *Daemon) handLiveness(peers []peer.Info) {
	d.alloc.SetPeers(peers)
	d.syncUnderlay(peers)
	now := time.Now()
	d.mu.Lock()
	d.upSince = upSince(d.upSince, peers, now)
	d.relayedAtDown = relayedAtDown(d.relayedAtDown, d.allocUp, peers, d.id.ID, d.links, d.reports, now)
	d.mu.Unlock()
	d.allocUp = upStates(d.allocUp, peers)
}

// relayedAtDown keeps, for each peer that is down, whether its link with
// this peer (self) was relayed both ways when it went down: its report in
// effect at now named self (the one routing uses, switch.go: a
// publication not yet in effect never reached its datapath), and our side
// had the link down since before the peer was last seen up (not merely
// silent since it went). A stopped or crashed peer's datapath keeps
// routing as it did then, so our side must too (peerReports). wasUp is who
// was up before; links is our side; reports is what the routing passes
// saw of each peer's report.
func relayedAtDown(known map[peer.ID]bool, wasUp map[peer.ID]bool, peers []peer.Info, self peer.ID, links map[peer.ID]linkState, reports map[peer.ID]report, now time.Time) map[peer.ID]bool {
	out := map[peer.ID]bool{}
	for _, p := range peers {
		if p.State.Up() {
			continue
		}
		if r, ok := known[p.ID]; ok {
			out[p.ID] = r
			continue
		}
		if !wasUp[p.ID] {
			continue // never seen up here: nothing to keep
		}
		l, ok := links[p.ID]
		inEffect := reports[p.ID].observe(p.Meta.Unreachable, p.Meta.UnreachableAt, now).effective(now)
		out[p.ID] = ok && l.Down && l.Changed.Before(p.LastSeen) && slices.Contains(inEffect, self)
	}
	return out
}

// upStates maps each peer to whether it is up: known itself when that
// says the same (it is read at every pass, and rarely changes).
func upStates(known map[peer.ID]bool, peers []peer.Info) map[peer.ID]bool {
	if known != nil && !livenessChanged(known, peers) && len(known) == len(peers) {
		return known
	}
	m := make(map[peer.ID]bool, len(peers))
	for _, p := range peers {
		m[p.ID] = p.State.Up()
	}
	return m
}

// upSince maps each peer up in peers to when it came up: its time in
// known if it was up there too, else now. Peers not up are left out.
// known itself is returned when that says the same.
func upSince(known map[peer.ID]time.Time, peers []peer.Info, now time.Time) map[peer.ID]time.Time {
	up := 0
	for _, p := range peers {
		if !p.State.Up() {
			continue
		}
		up++
		if _, ok := known[p.ID]; !ok {
			up = -1
			break
		}
	}
	if up == len(known) && known != nil {
		return known
	}
	m := make(map[peer.ID]time.Time, len(peers))
	for _, p := range peers {
		if !p.State.Up() {
			continue
		}
		if t, ok := known[p.ID]; ok {
			m[p.ID] = t
		} else {
			m[p.ID] = now
		}
	}
	return m
}

// livenessChanged reports whether a peer in known is up in peers while
// known says down, or the reverse, or is gone from peers.
func livenessChanged(known map[peer.ID]bool, peers []peer.Info) bool {
	seen := 0
	for _, p := range peers {
		if up, ok := known[p.ID]; ok {
			seen++
			if up != p.State.Up() {
				return true
			}
		}
	}
	return seen != len(known)
}

func (d *Daemon) poke() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// passStamp is what a pass read: the generations of the state it hands
// over (see the top of this file).
type passStamp struct {
	mesh, ring, underlay uint64
}

// stamp reads the generations; a pass reads them before the state.
func (d *Daemon) stamp() passStamp {
	s := passStamp{mesh: d.mesh.Gen(), ring: d.alloc.Gen()}
	if d.under != nil {
		s.underlay = d.under.alloc.Gen()
	}
	return s
}

// lastPass is what the sync loop knows of its last full pass.
type lastPass struct {
	stamp passStamp
	clean bool // it ran to the end and the router took its state
	at    time.Time
}

// due reports whether a pass the ticker woke must run, at stamp cur and
// time now: the state changed, the last pass did not end cleanly (a
// router error to retry, the restart grace), or it is fullPassEvery old.
func (l lastPass) due(cur passStamp, now time.Time) bool {
	return !l.clean || cur != l.stamp || now.Sub(l.at) >= fullPassEvery
}

func (d *Daemon) passDue() bool { return d.last.due(d.stamp(), time.Now()) }

func (d *Daemon) sync() {
	st := d.stamp()
	d.last = lastPass{stamp: st, at: time.Now()} // clean once it ends so
	peers := d.mesh.Peers()
	d.handLiveness(peers)
	ranges := d.alloc.Ranges()
	if d.dns != nil {
		d.dns.SetPeers(peers)
		d.dns.SetOwners(slices.Collect(maps.Keys(ranges)))
		d.syncOwnedNames()
	}
	known := d.learnOwners(peers, ranges)
	if d.inRestartGrace(peers) {
		return // keep the kernel as the last run left it until the mesh is found again
	}
	clean := true
	d.mu.Lock()
	bridge := d.bridge
	d.mu.Unlock()
	// The router waits for the bridge's address: a plan without it has no
	// routes, so a restarted peer would withdraw every route its last run
	// left (pods cut until the ring is loaded). A new peer has nothing to
	// route before it has space anyway.
	if bridge.IsValid() {
		rc, switched := d.routerConfig(peers, ranges, known)
		targets := make(map[peer.ID]netip.Addr, len(rc.Peers))
		for _, p := range rc.Peers {
			targets[p.ID] = p.Underlay
		}
		d.mu.Lock()
		d.probeTargets = targets
		d.mu.Unlock()
		set := d.router.Set
		if switched {
			set = d.router.SetNow
		}
		err := set(rc)
		d.mu.Lock()
		d.reconciles++
		d.routed = bridge
		if err != nil {
			d.recErrors++
		}
		d.mu.Unlock()
		if err != nil {
			d.log.Warn("router", "err", err)
			clean = false // the next tick retries
		}
	}
	d.syncDNSListen()
	if d.rememberSeen(peers) {
		clean = false // a new peer to write on the next tick
	}
	d.markJoined(peers)
	if d.kube != nil {
		d.kube.poke() // membership or the ring changed: Kubernetes mode looks again
	}
	if d.ownersDirty {
		clean = false // owners.json to write on the next tick (learnOwners)
	}
	d.last.clean = clean
}

// markJoined publishes Joined once this peer has reached one of the peers
// it was launched with (in Kubernetes mode, or one of the other Nodes).
func (d *Daemon) markJoined(peers []peer.Info) {
	if len(peers) == 0 || peers[0].Meta.Joined || !reachedTarget(peers[1:], mergeStrings(d.launch, d.kubeTargetsNow())) {
		return // Peers lists this peer first
	}
	if err := d.updateMeta(func(m *peer.Meta) { m.Joined = true }); err != nil {
		d.log.Warn("publish joined", "err", err)
	}
}

// reachedTarget reports whether one of the alive peers (this one not
// included) is one of the launch targets, named by host name or address,
// with or without a port.
func reachedTarget(others []peer.Info, targets []string) bool {
	for _, p := range others {
		if p.State != peer.Alive {
			continue
		}
		for _, t := range targets {
			host := t
			if h, _, err := net.SplitHostPort(t); err == nil {
				host = h
			}
			if host == p.Name || (p.Addr.IsValid() && host == p.Addr.String()) {
				return true
			}
		}
	}
	return false
}

// bootstrapAllowed is the IPAM bootstrap gate: a first division of the
// ring may happen only once this peer and every peer it knows alive have
// reached the peers they were launched with. An island of peers launched
// against a peer that was not up yet (h3 → h2 while h2 starts; h4 → h3)
// would otherwise divide a ring of its own and meet the real mesh with two
// rings; with the gate it waits, meets the mesh, and adopts its ring.
func (d *Daemon) bootstrapAllowed() bool { return allJoined(d.mesh.Peers()) }

// allJoined reports whether every alive peer has published Joined.
func allJoined(peers []peer.Info) bool {
	for _, p := range peers {
		if p.State == peer.Alive && !p.Meta.Joined {
			return false
		}
	}
	return true
}

// restartGrace bounds how long a restarted peer leaves the datapath alone
// while it has not found any other peer yet.
const restartGrace = 5 * time.Second

// inRestartGrace reports whether the router should not be touched yet: a
// peer that has peers to rejoin but has not met any of them would otherwise
// withdraw the WireGuard peers of those that own no space yet, a moment
// before gossip brings them back (ring owners are routed from owners.json
// anyway).
func (d *Daemon) inRestartGrace(peers []peer.Info) bool {
	return inRestartGrace(time.Since(d.started), d.haveJoinTargets(), peers)
}

// inRestartGrace is the decision: up for less than restartGrace, with
// peers to rejoin, none of which is alive yet (peers[0] is this peer).
func inRestartGrace(up time.Duration, haveTargets bool, peers []peer.Info) bool {
	if up > restartGrace || !haveTargets {
		return false
	}
	for _, p := range peers[min(1, len(peers)):] {
		if p.State == peer.Alive {
			return false
		}
	}
	return true
}

// routerConfig is the datapath's full desired state: routes follow the
// ring (see owners.go), so every ring owner is in it whatever its liveness.
//
// switched is true when a report took effect since the last call
// (switch.go): the other end switches now too, so it is applied at once.
func (d *Daemon) routerConfig(peers []peer.Info, ranges map[peer.ID][]netip.Prefix, known map[peer.ID]ownerInfo) (rc router.Config, switched bool) {
	rc = router.DefaultConfig()
	rc.ID = d.id.ID
	rc.Bridge = d.cfg.Bridge
	rc.Range = d.cfg.IPAllocRange
	rc.Transport = d.cfg.Transport
	rc.Underlay = d.mesh.LocalAddr().Addr()
	rc.MTU = d.cfg.MTU
	rc.WGIface, rc.WGPort, rc.WGPrivateKey = d.cfg.WGIface, d.cfg.WGPort, d.id.WGPrivateKey
	rc.VXIface, rc.VXPort = d.cfg.VXIface, d.cfg.VXPort
	rc.Insecure = d.cfg.Insecure
	rc.Masquerade = !d.cfg.NoMasquerade
	rc.LocalAddr, rc.LocalIface = d.cfg.DNSLocalAddress, d.cfg.DNSLocalIface
	now := time.Now()
	d.mu.Lock()
	rc.BridgeAddr = d.bridge
	rc.Unreachable = slices.Clone(d.ownReport.effective(now))
	ownTook, next := d.ownReport.step(d.lastRouted, now)
	eff := effectiveReports(d.reports, peers, d.id.ID, !d.ownReport.empty(), d.lastRouted, now)
	peers = eff.peers
	reports := peerReports(d.id.ID, peers, d.relayedAtDown)
	switched = ownTook || eff.took
	d.reportsApplied += uint64(eff.applied)
	if ownTook {
		d.reportsApplied++
	}
	if switched {
		d.switchPasses++
	}
	d.lastRouted = now
	d.mu.Unlock()
	d.switchAt(earliest(next, eff.next))
	rc.Local = ranges[d.id.ID]
	rc.Macvlan = d.macvlanConfig()
	for _, p := range routePeers(d.id.ID, ranges, peers, known) {
		rc.Peers = append(rc.Peers, router.Peer{
			ID: p.ID, Name: p.Info.Name, Underlay: p.Info.Underlay, WGPublicKey: p.Info.WGKey, WGPort: p.Info.WGPort,
			Bridge: p.Info.Bridge, Ranges: p.Ranges, Unreachable: reports[p.ID],
		})
	}
	d.acceptUnderlay(rc.Peers)
	return rc, switched
}

// peerReports is what each peer publishes it cannot reach (adjacency.go).
// Only a peer that is up measures: the report of one whose control plane
// stopped or died is from before, and would confirm a break that our side
// reads from its silent probe responder while its datapath still answers
// directly (the soak relayed h1→h3 so, and WireGuard dropped h3's direct
// replies). Our own report of a down peer still counts on our side: a
// relay that died is never chosen (router/paths.go).
//
// One edge of a down peer's report is kept: the one with this peer, when
// the link was relayed both ways as it went down (relayed, from
// relayedAtDown). Its datapath still relays to us then, and going direct
// on our side alone would have its WireGuard drop our replies (the soak:
// h4 stopped while h3-h4 was relayed; h3 went direct and lost h4's pings
// until h4 came back).
func peerReports(self peer.ID, peers []peer.Info, relayed map[peer.ID]bool) map[peer.ID][]peer.ID {
	reports := map[peer.ID][]peer.ID{}
	for _, p := range peers {
		switch {
		case p.State.Up():
			reports[p.ID] = p.Meta.Unreachable
		case relayed[p.ID]:
			reports[p.ID] = []peer.ID{self}
		}
	}
	return reports
}

// learnOwners refreshes the owner table from the ring and gossip, and
// persists it when it changed.
func (d *Daemon) learnOwners(peers []peer.Info, ranges map[peer.ID][]netip.Prefix) map[peer.ID]ownerInfo {
	d.mu.Lock()
	prev := d.owners
	next, changed := learnOwners(prev, d.id.ID, ranges, peers)
	if changed {
		d.owners = next
	}
	known := d.owners
	d.mu.Unlock()
	// Each owner's LastSeen steps once a minute, but the owners step at
	// different times: with hundreds of them, writing the table at every
	// step would write it at every pass. A change of LastSeen alone is
	// written at most once a minute.
	if changed && (!sameButSeen(prev, next) || time.Since(d.ownersSaved) >= lastSeenStep) {
		d.ownersDirty = true
	}
	// A change is written at most persistEvery after the last write: a
	// mass join changes the table as each peer gets its first space, and
	// the file is the whole table.
	if d.ownersDirty && time.Since(d.ownersSaved) >= persistGap(len(known)) {
		if err := saveOwners(d.cfg.DataDir, known); err != nil {
			d.log.Warn("save owners", "err", err)
		}
		d.ownersSaved, d.ownersDirty = time.Now(), false
	}
	return known
}

// persistEvery is the least time between two writes of a state file that
// follows membership or the ring (owners.json, targets.json): written at
// every change, a 100-peer start rewrote each ~100 times per peer, O(N)
// bytes each time. A change not yet written keeps the sync loop's passes
// running (sync), so it lands on the next tick.
const persistEvery = 2 * time.Second

// persistGap is the least time between two writes of a state file of n
// entries: persistEvery, and past 200 entries 10 ms an entry (a peer writes
// ~100 entries a second at most: 10 s at 1,000 peers, 20 s at 2,000). In
// the simulator's 2,000-peer join every peer rewrote its 2,000-owner table
// every 2 s, a quarter of the process's CPU (O(N) bytes a write, O(N²)
// over the mesh). A crash loses the changes of the last gap at most; the
// files serve only peers that are down when this one restarts (the others
// are in gossip again as soon as it rejoins).
func persistGap(n int) time.Duration {
	return max(persistEvery, time.Duration(n)*10*time.Millisecond)
}

// syncOwnedNames makes this peer's DNS records agree with its allocations:
// a pod's name lives exactly as long as its allocation.
func (d *Daemon) syncOwnedNames() {
	if d.dns == nil {
		return
	}
	allocs := append(d.alloc.Allocations(), d.underlayAllocations()...)
	allocated := make(map[string]netip.Addr, len(allocs))
	var want []dns.Owned
	for _, a := range allocs {
		allocated[a.ID] = a.Addr.Addr()
		if a.Name != "" {
			want = append(want, dns.Owned{Name: a.Name, Addr: a.Addr.Addr(), Container: a.ID})
		}
	}
	added, removed, err := d.dns.SyncOwned(want, allocated)
	if err != nil {
		d.log.Warn("dns names of allocations", "err", err)
	}
	if added+removed > 0 {
		d.log.Info("dns names follow allocations", "added", added, "removed", removed)
	}
}

// bridgeLoop gets the bridge its address from the ring (it waits for the
// ring while consensus is pending), then publishes it.
func (d *Daemon) bridgeLoop(ctx context.Context) error {
	for ctx.Err() == nil {
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		p, err := d.alloc.Allocate(actx, ipam.BridgeID)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				d.log.Info("waiting for an address for the bridge", "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
			continue
		}
		d.mu.Lock()
		d.bridge = p
		d.mu.Unlock()
		d.log.Info("bridge address", "bridge", d.cfg.Bridge, "addr", p)
		if err := d.updateMeta(func(m *peer.Meta) { m.Bridge = p.Addr() }); err != nil {
			d.log.Warn("publish bridge address", "err", err)
		}
		d.poke()
		return nil
	}
	return nil
}

// updateMeta changes this peer's published metadata. Every change goes
// through here, one at a time, and starts from the current metadata: two
// writers each publishing a copy they took earlier would undo each other
// (a Joined update once erased the bridge address).
func (d *Daemon) updateMeta(change func(*peer.Meta)) error {
	d.metaSem <- struct{}{}
	defer func() { <-d.metaSem }()
	m := d.mesh.Meta()
	change(&m)
	return d.mesh.SetMeta(m)
}

// syncDNSListen adds bridge:53 to the DNS listeners once the ring gave the
// bridge its address; the DNS server binds it as soon as the router has put
// it on the bridge. The node-local address (router.Config.LocalAddr) is served from the
// start: the server retries its bind until the address is up.
func (d *Daemon) syncDNSListen() {
	if d.dns == nil {
		return
	}
	d.mu.Lock()
	br := d.bridge
	want := slices.Clone(d.cfg.DNSListen)
	cur := d.dnsListen
	d.mu.Unlock()
	if a := d.cfg.DNSLocalAddress; a.IsValid() {
		want = append(want, net.JoinHostPort(a.String(), "53"))
	}
	if br.IsValid() {
		want = append(want, net.JoinHostPort(br.Addr().String(), "53"))
	}
	if slices.Equal(want, cur) {
		return
	}
	if err := d.dns.SetListen(want); err != nil {
		d.log.Debug("dns listen pending", "addrs", want, "err", err) // the server retries
	}
	d.mu.Lock()
	d.dnsListen = want
	d.mu.Unlock()
}

// rememberSeen persists the gossip addresses of alive peers, so a restart
// without PEER arguments finds the mesh again. It reports whether a change
// is left to write (seenDue).
func (d *Daemon) rememberSeen(peers []peer.Info) (pending bool) {
	port := uint16(d.gossipPort())
	var addrs []netip.AddrPort
	for _, p := range peers {
		if p.ID != d.id.ID && p.State == peer.Alive && p.Addr.IsValid() {
			addrs = append(addrs, netip.AddrPortFrom(p.Addr, port))
		}
	}
	if len(addrs) == 0 {
		return false
	}
	slices.SortFunc(addrs, netip.AddrPort.Compare)
	now := time.Now()
	d.mu.Lock()
	seen := d.targets.Seen
	changed := !slices.Equal(addrs, d.seenAddrs)
	if changed { // the strings only for a new set: this runs at every pass
		seen = make([]string, len(addrs))
		for i, a := range addrs {
			seen[i] = a.String()
		}
		slices.Sort(seen)
		d.seenAddrs = addrs
	}
	d.targets.Seen = seen
	save, pending := seenDue(d.seenSaved, seen, d.seenSavedAt, now)
	if save {
		d.seenSaved, d.seenSavedAt = seen, now
	}
	t := d.targets
	d.mu.Unlock()
	if save {
		if err := saveTargets(d.cfg.DataDir, t); err != nil {
			d.log.Warn("save targets", "err", err)
		}
	}
	if changed {
		// The reconnect targets follow the alive set at once: the mesh
		// joins every target that is not a member (gossip.Mesh.reconnect),
		// and a peer judged dead in error must not draw push-pulls.
		d.mesh.SetTargets(d.joinTargets())
	}
	return pending && !save
}

// seenKeep is how long a peer that went down stays in the saved file
// (targets.json; the list in memory follows the alive set).
const seenKeep = time.Minute

// seenDue reports whether the file's list of peers seen (saved at at)
// must be rewritten with alive (both sorted) now (due), and whether it
// must be soon (urgent: the file lacks a peer alive has; a restart must
// find it). A new peer is written persistGap after the last save at
// most (a first save at once), a departure only seenKeep after it. A dead
// peer's address costs a restart a refused dial or two until its first
// pass; rewriting the file at every liveness change cost a 100-peer start
// ~140 writes per peer, as false deaths came and went.
func seenDue(saved, alive []string, at, now time.Time) (due, urgent bool) {
	if slices.Equal(saved, alive) {
		return false, false
	}
	for _, a := range alive {
		if _, found := slices.BinarySearch(saved, a); !found {
			return now.Sub(at) >= persistGap(len(alive)), true
		}
	}
	return now.Sub(at) >= seenKeep, false
}

func (d *Daemon) gossipPort() int {
	_, p, _ := splitHostPort(d.cfg.Listen)
	if p == 0 {
		return int(d.mesh.LocalAddr().Port())
	}
	return p
}

// transportName is what status reports as this peer's transport.
func (d *Daemon) transportName() string {
	if d.cfg.Transport != "auto" {
		return d.cfg.Transport
	}
	if d.cfg.Insecure {
		return "auto"
	}
	return "wireguard"
}
