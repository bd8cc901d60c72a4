package router

// Relaying: routes over the adjacency graph.
//
// Every peer measures which peers it reaches directly on the datapath and
// publishes the others (Peer.Unreachable, Config.Unreachable). The graph has
// a node per peer and an edge between every two peers, except where one of
// the two ends reports the other unreachable: a link counts only when both
// ends see it work, so a one-way block (h1 → h3 dropped) removes it too.
// Peers with no report yet (just met) are assumed direct: that is how the
// datapath worked before relaying existed, and a wrong guess is corrected
// by the first report.
//
// NextHops computes, for one peer, the next hop towards every other peer:
// the destination itself when the link is up, otherwise the neighbour that
// starts a shortest path, ties broken by the lowest peer ID. Destinations
// with no path are absent (the plan then keeps the direct route: routes
// follow the ring, and a direct attempt is all there is).
//
// Why loops are impossible once views agree: let dist(X) be the hop count
// from X to destination D in the graph. Every peer picks as next hop a
// neighbour N with dist(N) = dist(self) - 1; N does the same with the same
// graph, so along any forwarding chain dist strictly decreases and the
// chain ends at D after dist(self) hops. The tie-break only chooses among
// such neighbours, so it cannot create a loop; it makes the choice the
// same on every peer, so all peers agree on each path without talking.
// While reports propagate (one gossip round, about a second), two peers
// may briefly compute on different graphs; a packet caught in that window
// is bounded by its TTL. Each peer's own links come from its own
// measurement, so no peer ever routes through a link it sees broken.
//
// The computation is a pure function of the peer set and the reports, and
// does not depend on their order (tested with rapid on generated
// topologies in paths_test.go).
//
// Cost: one breadth-first search per destination without a direct link,
// each O(peers + broken links) because it walks the complement of the
// broken set (an unvisited set shrinks or a broken link is hit). Healthy
// destinations cost O(1).

import (
	"slices"

	"github.com/weftmesh/weft/peer"
)

// Adjacency is what every peer reports: peer → the peers it cannot reach
// directly. A peer absent from the map reports nothing broken.
type Adjacency map[peer.ID][]peer.ID

// brokenSet is the symmetric set of broken links among known peers.
type brokenSet map[[2]peer.ID]bool

func linkKey(a, b peer.ID) [2]peer.ID {
	if a > b {
		a, b = b, a
	}
	return [2]peer.ID{a, b}
}

func makeBroken(nodes map[peer.ID]bool, adj Adjacency) brokenSet {
	out := brokenSet{}
	for a, bs := range adj {
		if !nodes[a] {
			continue
		}
		for _, b := range bs {
			if nodes[b] && a != b {
				out[linkKey(a, b)] = true
			}
		}
	}
	return out
}

// NextHops returns, for self, the next hop towards each other peer in
// peers: the peer itself when the direct link works, a relay when a
// shortest path through others exists, absent when none does. Duplicates
// in peers are ignored; self need not be listed.
func NextHops(self peer.ID, peers []peer.ID, adj Adjacency) map[peer.ID]peer.ID {
	nodeSet := map[peer.ID]bool{self: true}
	for _, p := range peers {
		nodeSet[p] = true
	}
	nodes := make([]peer.ID, 0, len(nodeSet))
	for p := range nodeSet {
		nodes = append(nodes, p)
	}
	slices.Sort(nodes)
	broken := makeBroken(nodeSet, adj)
	out := make(map[peer.ID]peer.ID, len(nodes))
	for _, d := range nodes {
		if d == self {
			continue
		}
		if !broken[linkKey(self, d)] {
			out[d] = d
			continue
		}
		dist := distances(d, nodes, broken)
		ds, ok := dist[self]
		if !ok {
			continue // no path
		}
		for _, n := range nodes { // sorted: the first fit has the lowest ID
			if n != self && !broken[linkKey(self, n)] {
				if dn, ok := dist[n]; ok && dn == ds-1 {
					out[d] = n
					break
				}
			}
		}
	}
	return out
}

// distances is a breadth-first search from d over the complement of
// broken: hop counts of every peer that reaches d.
func distances(d peer.ID, nodes []peer.ID, broken brokenSet) map[peer.ID]int {
	dist := map[peer.ID]int{d: 0}
	unvisited := make([]peer.ID, 0, len(nodes))
	for _, n := range nodes {
		if n != d {
			unvisited = append(unvisited, n)
		}
	}
	queue := []peer.ID{d}
	for len(queue) > 0 && len(unvisited) > 0 {
		u := queue[0]
		queue = queue[1:]
		keep := unvisited[:0]
		for _, v := range unvisited {
			if broken[linkKey(u, v)] {
				keep = append(keep, v)
				continue
			}
			dist[v] = dist[u] + 1
			queue = append(queue, v)
		}
		unvisited = keep
	}
	return dist
}
