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
//
//   - Direct, unless the link is confirmed broken: reported by BOTH ends.
//     A peer whose control plane is stopped or crashed stops answering
//     probes while its datapath keeps forwarding, and it goes on sending
//     to us directly with the routes it last had. Were we to route to it
//     through a relay on our side alone, its answers would come back on
//     the direct path, and WireGuard would drop them (their source is no
//     longer in that peer's AllowedIPs): routes follow the ring, not
//     liveness. A real break is seen by both ends, since the probe is
//     request/response, so it is confirmed one gossip round after it is
//     seen.
//   - Otherwise the neighbour that starts a shortest path over the graph
//     (here a one-sided report is enough to avoid a link: a relay that
//     died is never chosen), ties broken by the lowest peer ID.
//   - Absent when no path exists: the plan then keeps the direct route, a
//     direct attempt being all there is.
//
// Why loops are impossible once the reports have reached every peer: let
// dist(X) be the hop count from X to destination D in the graph. A peer
// forwards either directly to D, which ends the chain, or to a neighbour N
// with dist(N) = dist(self) - 1; N does the same over the same graph, so
// along any forwarding chain dist strictly decreases until a hop delivers
// to D. The tie-break only chooses among such neighbours, so it cannot
// create a loop; it makes the choice the same on every peer, so all peers
// agree on each path without talking. While a report propagates (one
// gossip round, about a second), two peers may briefly compute on
// different graphs; a packet caught in that window is bounded by its TTL.
//
// The computation is a pure function of the peer set and the reports, and
// does not depend on their order (tested with rapid on generated
// topologies in paths_test.go).
//
// Cost: one breadth-first search per destination whose link is broken,
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

// reports reports whether a reported b unreachable.
func reports(adj Adjacency, a, b peer.ID) bool {
	for _, x := range adj[a] {
		if x == b {
			return true
		}
	}
	return false
}

// graph is the peers, sorted by ID, and for each (by index) the indexes of
// the peers it has a broken link with (reported by either end).
type graph struct {
	ids    []peer.ID
	index  map[peer.ID]int
	broken [][]int
}

func makeGraph(self peer.ID, peers []peer.ID, adj Adjacency) graph {
	g := graph{index: map[peer.ID]int{self: 0}}
	for _, p := range peers {
		g.index[p] = 0
	}
	for p := range g.index {
		g.ids = append(g.ids, p)
	}
	slices.Sort(g.ids)
	for i, p := range g.ids {
		g.index[p] = i
	}
	g.broken = make([][]int, len(g.ids))
	for a, bs := range adj {
		ia, ok := g.index[a]
		if !ok {
			continue
		}
		for _, b := range bs {
			if ib, ok := g.index[b]; ok && ia != ib {
				g.broken[ia] = append(g.broken[ia], ib)
				g.broken[ib] = append(g.broken[ib], ia)
			}
		}
	}
	return g
}

// NextHops returns, for self, the next hop towards each other peer in
// peers: the peer itself unless both ends report the link broken, else a
// relay when a shortest path through others exists, absent when none
// does. Duplicates in peers are ignored; self need not be listed.
func NextHops(self peer.ID, peers []peer.ID, adj Adjacency) map[peer.ID]peer.ID {
	g := makeGraph(self, peers, adj)
	si := g.index[self]
	out := make(map[peer.ID]peer.ID, len(g.ids))
	var selfBroken []bool // by index: self's link is broken (lazily built)
	for di, d := range g.ids {
		if d == self {
			continue
		}
		if !reports(adj, self, d) || !reports(adj, d, self) {
			out[d] = d // not confirmed broken by both ends
			continue
		}
		if selfBroken == nil {
			selfBroken = make([]bool, len(g.ids))
			for _, j := range g.broken[si] {
				selfBroken[j] = true
			}
		}
		dist := g.distances(di)
		if dist[si] < 0 {
			continue // no path
		}
		for n := range g.ids { // sorted: the first fit has the lowest ID
			if n != si && !selfBroken[n] && dist[n] == dist[si]-1 {
				out[d] = g.ids[n]
				break
			}
		}
	}
	return out
}

// distances is a breadth-first search from index d over the complement of
// the broken links: the hop count of every peer to d, -1 where none. It
// walks the unvisited peers from each visited one, so each check either
// visits a peer or hits a broken link: O(peers + broken links).
func (g graph) distances(d int) []int {
	n := len(g.ids)
	dist := make([]int, n)
	for i := range dist {
		dist[i] = -1
	}
	dist[d] = 0
	unvisited := make([]int, 0, n)
	for i := range n {
		if i != d {
			unvisited = append(unvisited, i)
		}
	}
	mark := make([]int, n) // mark[v] == u+1: the link u-v is broken
	queue := []int{d}
	for len(queue) > 0 && len(unvisited) > 0 {
		u := queue[0]
		queue = queue[1:]
		for _, v := range g.broken[u] {
			mark[v] = u + 1
		}
		keep := unvisited[:0]
		for _, v := range unvisited {
			if mark[v] == u+1 {
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
