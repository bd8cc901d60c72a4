package daemon

// The decisions of Kubernetes mode, as pure functions of the Node list,
// gossip's peer table and the ring (kube.go applies them; the tests are
// tables in kubedecide_test.go). Nodes and peers are matched by name: in
// Kubernetes mode a peer's name is its Node's name.

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/weftmesh/weft/api/client"
	"github.com/weftmesh/weft/ipam"
	"github.com/weftmesh/weft/kube"
	"github.com/weftmesh/weft/peer"
)

// reclaimAfter is how long a peer whose Node is gone must have been down
// before its space is reclaimed: longer than gossip's push-pull interval
// (10 s), so that its last ring writes have reached the survivors (the
// assumption ipam's reclaim states). A peer this one never heard from
// counts as down since this peer started.
const reclaimAfter = 15 * time.Second

// nodeGrace is how long a Node may exist without a weft peer (and this
// peer run without having met it) before status calls it a problem: the
// DaemonSet needs a moment to start weft on a new Node.
const nodeGrace = time.Minute

// kubeSyncGrace is how long the Node informer may take to list the API
// server before status calls it a problem.
const kubeSyncGrace = 10 * time.Second

// kubeStart is what New learns from the Node list.
type kubeStart struct {
	Self    kube.Node // our Node
	Targets []string  // the other Nodes' InternalIPs
	Nodes   int       // how many Nodes the API has: the bootstrap quorum
}

// kubeBootstrap finds our Node (named name) in the list. needAddr: the
// advertise address must come from its InternalIP.
func kubeBootstrap(nodes []kube.Node, name string, needAddr bool) (kubeStart, error) {
	self, ok := findNode(nodes, name)
	if !ok {
		return kubeStart{}, fmt.Errorf("%w: Node %q is not among the %d Nodes of the API server: the peer's name must be its Node's name (NODE_NAME from spec.nodeName, or --name)",
			kube.ErrNoNode, name, len(nodes))
	}
	if needAddr && !self.InternalIP.IsValid() {
		return kubeStart{}, fmt.Errorf("Node %s has no InternalIP address yet (the kubelet sets it); pass --advertise to choose the address", name)
	}
	return kubeStart{Self: self, Targets: kubeTargets(nodes, name, self.InternalIP), Nodes: len(nodes)}, nil
}

// kubeTargets is the gossip targets the Node list gives: the InternalIP of
// every Node but ours (by name and by address), sorted, without
// duplicates. Nodes without an address yet are skipped until they have
// one.
func kubeTargets(nodes []kube.Node, self string, selfAddr netip.Addr) []string {
	var out []string
	for _, n := range nodes {
		if n.Name == self || !n.InternalIP.IsValid() || n.InternalIP == selfAddr {
			continue
		}
		if s := n.InternalIP.String(); !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

// networkUp reports whether this peer may tell Kubernetes that its Node's
// network is available: it can serve pods (ready: the ring is ready, the
// bridge has its address, there is free space) and it has joined the
// mesh, or it is the ring's only owner (a one-Node cluster, or a peer
// restarted while the others are down).
func networkUp(self peer.ID, joined bool, st ipam.Status, ready bool) bool {
	if !ready || st.Status != "ready" {
		return false
	}
	if joined {
		return true
	}
	for _, o := range st.Owners {
		if o.ID != self && o.Owned > 0 {
			return false
		}
	}
	return true
}

// gonePeer is a peer whose Node object is gone: its space (Owned > 0) is
// to be reclaimed, or, owning none, it is to be forgotten.
type gonePeer struct {
	ID    peer.ID
	Name  string
	Owned int64
}

// gonePeers decides which peers to reclaim or forget because their Node
// is gone. A peer (from gossip, or a ring owner this peer never met) is
// chosen only when
//   - our own Node is in the list (a list without it is not a view of our
//     cluster to act on; nodes must come from a synced informer),
//   - it is not this peer and has a name (Nodes are matched by name),
//   - no Node of its name exists: never act on a Node that still exists,
//   - it is not up in gossip: never reclaim a peer that is up (ipam and
//     every acceptor of its Paxos round check again),
//   - it has been down for reclaimAfter (a peer never heard from: this
//     peer has run that long).
//
// The result is sorted by name, then ID.
func gonePeers(self peer.ID, selfName string, nodes []kube.Node, peers []peer.Info, owners []ipam.OwnerStatus, up time.Duration, now time.Time) []gonePeer {
	if _, ok := findNode(nodes, selfName); !ok {
		return nil
	}
	names := make(map[string]bool, len(nodes))
	for _, n := range nodes {
		names[n.Name] = true
	}
	type cand struct {
		name  string
		info  peer.Info
		known bool // gossip (or owners.json) knows it
		owned int64
	}
	byID := map[peer.ID]*cand{}
	get := func(id peer.ID) *cand {
		if byID[id] == nil {
			byID[id] = &cand{}
		}
		return byID[id]
	}
	for _, p := range peers {
		if p.ID == 0 || p.ID == self {
			continue
		}
		// The same ID under two names (a peer renamed to its Node's
		// name): the entry that is up speaks for it.
		if c := get(p.ID); !c.known || p.State.Up() {
			c.name, c.info, c.known = p.Name, p, true
		}
	}
	for _, o := range owners {
		if o.ID == 0 || o.ID == self {
			continue
		}
		c := get(o.ID)
		c.owned += o.Owned
		if c.name == "" {
			c.name = o.Name
		}
	}
	var out []gonePeer
	for id, c := range byID {
		heard := c.known && !c.info.LastSeen.IsZero()
		switch {
		case c.name == "", names[c.name]:
		case c.known && c.info.State.Up():
		case heard && now.Sub(c.info.LastSeen) < reclaimAfter:
		case !heard && up < reclaimAfter:
		default:
			out = append(out, gonePeer{ID: id, Name: c.name, Owned: c.owned})
		}
	}
	slices.SortFunc(out, func(a, b gonePeer) int { return cmp.Or(strings.Compare(a.Name, b.Name), cmp.Compare(a.ID, b.ID)) })
	return out
}

// namedPeer is what is known of the peer of one name.
type namedPeer struct {
	ID       peer.ID
	State    peer.State // "" = known only from the ring: never met
	LastSeen time.Time
	Owned    int64
}

// namedPeers indexes the peers and ring owners by name. Of two entries of
// one name, the one that is up wins, else the one seen last; a down entry
// whose ID is up under another name is dropped (a renamed peer).
func namedPeers(peers []peer.Info, owners []ipam.OwnerStatus) map[string]namedPeer {
	owned := map[peer.ID]int64{}
	for _, o := range owners {
		owned[o.ID] += o.Owned
	}
	upIDs := map[peer.ID]bool{}
	for _, p := range peers {
		if p.State.Up() {
			upIDs[p.ID] = true
		}
	}
	out := map[string]namedPeer{}
	for _, p := range peers {
		if p.Name == "" || (!p.State.Up() && upIDs[p.ID]) {
			continue
		}
		cur, ok := out[p.Name]
		if ok && (cur.State.Up() || (!p.State.Up() && !p.LastSeen.After(cur.LastSeen))) {
			continue
		}
		out[p.Name] = namedPeer{ID: p.ID, State: p.State, LastSeen: p.LastSeen, Owned: owned[p.ID]}
	}
	for _, o := range owners {
		if _, ok := out[o.Name]; !ok && o.Name != "" && !upIDs[o.ID] {
			out[o.Name] = namedPeer{ID: o.ID, Owned: owned[o.ID]}
		}
	}
	return out
}

// nodesWithoutPeer lists the Nodes no peer of whose name is known (or
// only one that left the mesh).
func nodesWithoutPeer(nodes []kube.Node, named map[string]namedPeer) []string {
	out := []string{}
	for _, n := range nodes {
		if p, ok := named[n.Name]; !ok || p.State == peer.Left {
			out = append(out, n.Name)
		}
	}
	return out
}

// bootstrapProblem explains, in Kubernetes mode, why the ring's first
// division waits: its quorum was counted from the Nodes in the API at
// start, and Nodes that run no weft cannot take part. "" when the ring is
// ready or the quorum was given explicitly.
func bootstrapProblem(consensus bool, startNodes int, ipamStatus string, without []string) string {
	if !consensus || ipamStatus == "ready" || startNodes <= 1 {
		return ""
	}
	msg := fmt.Sprintf("IPAM %s: the first division of the ring needs %d of the %d Nodes that were in the API when this peer started to run weft (consensus=%d)",
		ipamStatus, startNodes/2+1, startNodes, startNodes)
	if len(without) > 0 {
		msg += fmt.Sprintf("; Nodes without a weft peer: %s. A Node that never runs weft holds the bootstrap back: start weft there, or restart the weft pods once it is deleted (the quorum is counted at start)",
			strings.Join(without, ", "))
	}
	return msg
}

// kubeInput is what the Kubernetes view of status is made of.
type kubeInput struct {
	Self       string // our Node's name
	Nodes      []kube.Node
	Synced     bool
	Peers      []peer.Info // gossip and the known ring owners (withKnownOwners)
	Owners     []ipam.OwnerStatus
	Consensus  bool // the bootstrap quorum is StartNodes
	StartNodes int
	IPAM       string // the ring's status line
	Up         time.Duration
	Now        time.Time
}

// kubeView is the Kubernetes part of status: every Node with its peer,
// the Nodes without a peer, the peers without a Node, and what is wrong,
// in words.
func kubeView(in kubeInput) (*client.KubeStatus, []string) {
	ks := &client.KubeStatus{Node: in.Self, Synced: in.Synced, Nodes: []client.KubeNode{},
		NodesWithoutPeer: []string{}, PeersWithoutNode: []string{}}
	problems := []string{}
	if !in.Synced {
		if in.Up >= kubeSyncGrace {
			problems = append(problems, "Kubernetes: the Node informer has not listed the API server yet: is it reachable, and may weft's ClusterRole get, list and watch nodes?")
		}
		return ks, problems
	}
	named := namedPeers(in.Peers, in.Owners)
	onNode := map[string]bool{}
	ks.NodesWithoutPeer = nodesWithoutPeer(in.Nodes, named)
	for _, n := range in.Nodes {
		onNode[n.Name] = true
		kn := client.KubeNode{Name: n.Name, InternalIP: addrString(n.InternalIP), Ready: n.Ready, NetworkAvailable: n.NetworkAvailable}
		if p, ok := named[n.Name]; ok && p.State != peer.Left {
			kn.Peer, kn.PeerState = p.ID.String(), string(p.State)
		} else if in.Now.Sub(n.Created) >= nodeGrace && in.Up >= nodeGrace {
			problems = append(problems, fmt.Sprintf("node %s has no weft peer: is the weft pod running there?", n.Name))
		}
		if n.Name == in.Self {
			ks.NetworkAvailable = n.NetworkAvailable
		}
		ks.Nodes = append(ks.Nodes, kn)
	}
	if !onNode[in.Self] {
		problems = append(problems, fmt.Sprintf("this peer's Node %s is not in the API server (deleted?): the other peers reclaim this peer's space once it is down", in.Self))
	}
	for _, name := range slices.Sorted(maps.Keys(named)) {
		p := named[name]
		if onNode[name] || (p.State == peer.Left && p.Owned == 0) {
			continue
		}
		ks.PeersWithoutNode = append(ks.PeersWithoutNode, name)
		if name == in.Self {
			continue // said above
		}
		problems = append(problems, peerWithoutNode(name, p))
	}
	if msg := bootstrapProblem(in.Consensus, in.StartNodes, in.IPAM, ks.NodesWithoutPeer); msg != "" {
		problems = append(problems, msg)
	}
	return ks, problems
}

// peerWithoutNode says what happens to a peer that has no Node object.
func peerWithoutNode(name string, p namedPeer) string {
	if p.State.Up() {
		if p.Owned > 0 {
			return fmt.Sprintf("peer %s has no Node object: it will be reclaimed once it is down", name)
		}
		return fmt.Sprintf("peer %s has no Node object: it will be forgotten once it is down", name)
	}
	state := string(p.State)
	if state == "" {
		state = "not met by this peer"
	}
	if p.Owned > 0 {
		return fmt.Sprintf("peer %s has no Node object and is %s: its %d addresses are being reclaimed (this needs a majority of the peers reachable)", name, state, p.Owned)
	}
	return fmt.Sprintf("peer %s has no Node object and is %s: it is being forgotten", name, state)
}
