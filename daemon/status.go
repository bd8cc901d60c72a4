package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/api/client"
	"github.com/weftmesh/weft/ipam"
	"github.com/weftmesh/weft/peer"
	"github.com/weftmesh/weft/router"
)

// Status assembles this peer's view of the mesh (`weft status --json`).
func (d *Daemon) Status(ctx context.Context) (*client.Status, error) {
	peers := d.withKnownOwners(d.mesh.Peers())
	names := map[peer.ID]string{}
	for _, p := range peers {
		names[p.ID] = p.Name
	}
	up := upStates(nil, peers) // Peers lists this peer first, alive
	st := &client.Status{
		Name:          d.id.Name,
		ID:            d.id.ID.String(),
		Version:       Version,
		Transport:     d.transportName(),
		Encrypted:     !d.cfg.Insecure,
		Insecure:      d.cfg.Insecure,
		UptimeSeconds: time.Since(d.started).Seconds(),
		Peers:         []client.Peer{},
		Pods:          []client.Pod{},
		Problems:      []string{},
	}
	st.IPAM = ipamStatusOf(d.alloc.Status(), names, up)
	st.Underlay = d.underlayStatus(names, up)
	owned := map[string]int64{}
	for _, o := range st.IPAM.Owners {
		owned[o.ID] = o.Owned
	}
	stats := d.statusStats()
	for _, p := range peers {
		cp := client.Peer{Name: p.Name, ID: p.ID.String(), Address: addrString(p.Addr), State: string(p.State),
			Self: p.ID == d.id.ID, LastSeen: timeString(p.LastSeen), RTTMillis: float64(p.RTT) / float64(time.Millisecond)}
		if p.Meta.Bridge.IsValid() {
			cp.Bridge = p.Meta.Bridge.String()
		}
		if cp.Self {
			cp.Transport = st.Transport
		} else {
			cp.Transport = d.router.PeerTransport(p.ID)
			if s, ok := stats[p.ID]; ok {
				cp.Endpoint = s.Endpoint
				cp.LastHandshake = timeString(s.LastHandshake)
				cp.RxBytes, cp.TxBytes = s.RxBytes, s.TxBytes
			}
			cp.Reason = linkReason(p, cp, owned[cp.ID])
			cp.LinkTimeoutSeconds = d.linkTimeoutOf(p.ID).Seconds()
			if relay, ok := d.router.PeerVia(p.ID); ok {
				cp.Via = names[relay]
				if cp.Via == "" {
					cp.Via = relay.String()
				}
			}
			if r := relayReason(d.linkDown(p.ID), cp.Via); r != "" && p.State.Up() {
				cp.Reason = r // says more than "no WireGuard handshake yet" of a blocked link
			}
		}
		st.Peers = append(st.Peers, cp)
	}
	st.DNS = d.dnsStatus(names)
	st.Pods = d.podList()
	st.Problems = append(d.problems(st, peers, time.Now()), d.underlayProblems(names)...)
	st.Problems = append(st.Problems, relayProblems(st)...)
	if d.kube != nil {
		d.kubeStatus(st, peers)
	}
	var policyProblems []string
	st.Policy, policyProblems = d.policyStatus()
	st.Problems = append(st.Problems, policyProblems...)
	return st, nil
}

// statusWait bounds how long status waits for the datapath's counters. A
// busy userspace datapath answers the dump of every peer late (up to 4 s
// in a 100-peer start on 2 cores, and as a peer died), and status (`weft
// status`, every /metrics scrape) must not hang on it: past the bound it
// shows the last reading (the adjacency loop takes one every statsEvery;
// without the datapath probe, the last status's).
const statusWait = 500 * time.Millisecond

// statusStats returns the datapath's counters, or the last reading when
// the device does not answer within statusWait. One read at a time: while
// one is under way, status takes the last reading, so a datapath that
// hangs does not collect a goroutine per request.
func (d *Daemon) statusStats() map[peer.ID]router.PeerStats {
	return readWithin(&d.statsReading, statusWait, d.router.Stats, d.router.LastStats)
}

// readWithin returns read's answer if it comes within wait, else last's;
// while an earlier read is still under way (busy), last's at once.
func readWithin[T any](busy *atomic.Bool, wait time.Duration, read, last func() T) T {
	if !busy.CompareAndSwap(false, true) {
		return last()
	}
	ch := make(chan T, 1)
	go func() {
		defer busy.Store(false)
		ch <- read()
	}()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case v := <-ch:
		return v
	case <-t.C:
		return last()
	}
}

// withKnownOwners adds to the membership the ring owners that gossip does
// not know (this peer restarted while they were down), as dead peers with
// what was last known of them: they are listed until reclaimed.
func (d *Daemon) withKnownOwners(peers []peer.Info) []peer.Info {
	seen := map[peer.ID]bool{}
	for _, p := range peers {
		seen[p.ID] = true
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, o := range d.owners {
		if !seen[id] {
			peers = append(peers, peer.Info{Name: o.Name, ID: id, Addr: o.Underlay, State: peer.Dead, LastSeen: o.LastSeen,
				Meta: peer.Meta{WGKey: o.WGKey, WGPort: o.WGPort, Bridge: o.Bridge}})
		}
	}
	return peers
}

// linkTimeoutOf is the silence allowance of the link to id (linkTimeout),
// zero when it is not probed (no prober, or not a datapath peer).
func (d *Daemon) linkTimeoutOf(id peer.ID) time.Duration {
	d.mu.Lock()
	pr := d.prober
	_, probed := d.probeTargets[id]
	d.mu.Unlock()
	if pr == nil || !probed {
		return 0
	}
	return linkTimeout(pr.Ticks(id))
}

// linkDown reports whether this peer measures its direct link to id as
// down (adjacency.go).
func (d *Daemon) linkDown(id peer.ID) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.links[id].Down
}

// relayReason says why a peer's traffic takes a detour, or why it does
// not though the direct link fails, or "".
func relayReason(down bool, via string) string {
	switch {
	case via != "":
		return "no direct link; relaying through " + via
	case down:
		// paths.go relays only when both ends report the link and some
		// peer reaches both.
		return noAnswer + "; no relay in use until both ends report the link and a peer reaches both"
	}
	return ""
}

const noAnswer = "no answer on the direct path"

// relayProblems states each relayed or cut-off peer in words, from this
// peer's point of view ("h1 cannot reach h3 directly; relaying through
// h2").
func relayProblems(st *client.Status) []string {
	var out []string
	for _, p := range st.Peers {
		switch {
		case p.Self:
		case p.Via != "":
			out = append(out, fmt.Sprintf("%s cannot reach %s directly; relaying through %s", st.Name, p.Name, p.Via))
		case strings.HasPrefix(p.Reason, noAnswer):
			out = append(out, fmt.Sprintf("%s gets no answer from %s on the direct path, and no relay is in use", st.Name, p.Name))
		}
	}
	return out
}

// linkReason says, in words, why a link to a peer is not healthy. owned is
// how many addresses the peer owns in the ring.
func linkReason(p peer.Info, cp client.Peer, owned int64) string {
	since := ""
	if cp.LastSeen != "" {
		since = " since " + cp.LastSeen
	}
	kept := ""
	if owned > 0 {
		kept = fmt.Sprintf("; it owns %d addresses, whose routes are kept: its pods stay reachable while its host runs", owned)
	}
	switch p.State {
	case peer.Stopped:
		return "control plane stopped" + since + kept
	case peer.Dead:
		return "unreachable" + since + " (failure detector)" + kept
	case peer.Left:
		return "left the mesh" + kept
	}
	if !p.Meta.Bridge.IsValid() {
		return "no bridge address yet (its IPAM is not ready)"
	}
	if cp.Transport == "wireguard" && cp.LastHandshake == "" {
		return "no WireGuard handshake yet"
	}
	return ""
}

// ipamStatusOf renders a ring's status (the pod range's or the underlay
// pool's). up is whether each peer is up in the membership snapshot that
// the rest of the status shows: an owner's reachability comes from it, so
// that one answer never lists a peer as dead and its ranges as reachable
// (the allocator learns membership at the next sync pass, up to 500 ms
// later). Owners missing from up keep the allocator's view.
func ipamStatusOf(s ipam.Status, names map[peer.ID]string, up map[peer.ID]bool) client.IPAMStatus {
	reachable := func(id peer.ID, ipamSays bool) bool {
		if u, ok := up[id]; ok {
			return u
		}
		return ipamSays
	}
	out := client.IPAMStatus{Range: s.Range.String(), Status: s.Status, Owned: s.Owned, Free: s.Free,
		Allocated: s.Allocated, Owners: []client.IPAMOwner{}, Ranges: []client.IPAMRange{}}
	if !s.Changed.IsZero() {
		out.Changed = s.Changed.UTC().Format(time.RFC3339Nano) // to the millisecond: a start's agreement
	}
	for _, o := range s.Owners {
		name := o.Name
		if name == "" {
			name = names[o.ID]
		}
		out.Owners = append(out.Owners, client.IPAMOwner{Name: name, ID: o.ID.String(), Owned: o.Owned,
			Share: o.Share, Free: o.Free, Reachable: reachable(o.ID, o.Reachable)})
	}
	for _, r := range s.Runs {
		name := r.OwnerName
		if name == "" {
			name = names[r.Owner]
		}
		out.Ranges = append(out.Ranges, client.IPAMRange{Start: r.Start.String(), End: r.End.String(), Size: r.Size,
			Owner: r.Owner.String(), OwnerName: name, Free: r.Free, Reachable: reachable(r.Owner, r.Reachable)})
	}
	return out
}

func (d *Daemon) dnsStatus(names map[peer.ID]string) client.DNSStatus {
	out := client.DNSStatus{Domain: d.cfg.DNSDomain, Listen: []string{}, Entries: []client.DNSEntry{}}
	if d.dns == nil {
		return out
	}
	for _, a := range d.dns.ListenAddrs() {
		out.Listen = append(out.Listen, a.String())
	}
	for _, e := range d.dns.Entries() {
		out.Entries = append(out.Entries, client.DNSEntry{Name: e.Name, Address: e.Addr.String(),
			Owner: e.Owner.String(), OwnerName: names[e.Owner], ContainerID: e.ContainerID})
	}
	return out
}

// podList is this peer's allocations other than the bridge, with the pod
// name stored with the allocation or, failing that, from its DNS record.
func (d *Daemon) podList() []client.Pod {
	byContainer := map[string]string{}
	if d.dns != nil {
		dom := "." + strings.TrimSuffix(d.cfg.DNSDomain, ".") + "."
		for _, e := range d.dns.Entries() {
			if e.Owner == d.id.ID && e.ContainerID != "" {
				byContainer[e.ContainerID] = strings.TrimSuffix(e.Name, dom)
			}
		}
	}
	out := []client.Pod{}
	for _, a := range d.alloc.Allocations() {
		if a.ID == ipam.BridgeID {
			continue
		}
		name := a.Name
		if name == "" {
			name = byContainer[a.ID]
		}
		id, ifname, ok := strings.Cut(a.ID, ":")
		if !ok {
			ifname = "eth0" // the CNI plugin keys eth0 attachments by container ID alone
		}
		out = append(out, client.Pod{ContainerID: id, IfName: ifname, Name: name, Address: a.Addr.String(), Mode: "routed"})
	}
	out = append(out, d.underlayPods()...)
	sort.Slice(out, func(i, j int) bool { return out[i].ContainerID < out[j].ContainerID })
	return out
}

// rmpeerAdviceAfter is how long a ring owner must have been down before
// status suggests `weft rmpeer`: a peer down that long is probably not
// restarting, and its host may be gone. Before that, its pods are still
// routed and reachable while its host runs, so reclaiming would be wrong.
const rmpeerAdviceAfter = 5 * time.Minute

// problems lists, in words, what an operator should look at.
func (d *Daemon) problems(st *client.Status, peers []peer.Info, now time.Time) []string {
	out := []string{}
	if st.Insecure {
		out = append(out, "running --insecure: gossip is not encrypted and pod traffic crosses the network in clear")
	}
	if st.IPAM.Status != "ready" {
		out = append(out, "IPAM "+st.IPAM.Status+": pods cannot get addresses yet")
	}
	byID := map[string]peer.Info{}
	for _, p := range peers {
		byID[p.ID.String()] = p
	}
	for _, o := range st.IPAM.Owners {
		p, known := byID[o.ID]
		if msg := ownerProblem(o, p, known, now, d.started); msg != "" {
			out = append(out, msg)
		}
	}
	var joins []string
	for target, why := range d.mesh.JoinErrors() {
		if reachedTarget(peers, []string{target}) {
			continue // the peer there joined us since: the failed attempt is stale
		}
		joins = append(joins, fmt.Sprintf("cannot join %s: %s", target, why))
	}
	sort.Strings(joins)
	return append(out, joins...)
}

// ownerProblem says in words what it means that a ring owner is not up,
// or "" when there is nothing to say: the owner is this peer, is up, or
// has not been met yet by a peer that started a moment ago. p is what
// this peer knows of the owner (known false: not even its name).
func ownerProblem(o client.IPAMOwner, p peer.Info, known bool, now, started time.Time) string {
	if o.Owned == 0 || (known && p.State.Up()) {
		return ""
	}
	name := o.Name
	if name == "" {
		name = o.ID
	}
	advice := fmt.Sprintf("; if its host is gone for good, 'weft rmpeer %s' reclaims them", name)
	if !known || p.LastSeen.IsZero() {
		if now.Sub(started) < rmpeerAdviceAfter {
			return "" // not met yet: the mesh is still forming
		}
		return fmt.Sprintf("%d addresses are owned by %s, which this peer has not heard from since it started %s ago%s",
			o.Owned, name, now.Sub(started).Round(time.Second), advice)
	}
	down := now.Sub(p.LastSeen).Round(time.Second)
	what := "is unreachable"
	switch p.State {
	case peer.Stopped:
		what = "is stopped (its control plane)"
	case peer.Left:
		what = "left the mesh"
	}
	msg := fmt.Sprintf("%s %s, last seen %s ago, and owns %d addresses: routes to them are kept, so its pods stay reachable while its host runs",
		name, what, down, o.Owned)
	if down >= rmpeerAdviceAfter {
		msg += advice
	}
	return msg
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func timeString(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}
