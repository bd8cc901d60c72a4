package router_test

import (
	"maps"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"

	"github.com/weftmesh/weft/peer"
	"github.com/weftmesh/weft/router"
)

// topology is a generated mesh: peers and what each reports broken.
type topology struct {
	peers []peer.ID
	adj   router.Adjacency
}

func drawTopology(t *rapid.T) topology {
	n := rapid.IntRange(1, 12).Draw(t, "n")
	ids := rapid.SliceOfNDistinct(rapid.Uint64Range(1, 40), n, n, rapid.ID[uint64]).Draw(t, "ids")
	var tp topology
	for _, id := range ids {
		tp.peers = append(tp.peers, peer.ID(id))
	}
	// Sparse and dense graphs both matter: the density is drawn too.
	density := rapid.IntRange(0, 100).Draw(t, "brokenPercent")
	tp.adj = router.Adjacency{}
	for _, a := range tp.peers {
		for _, b := range tp.peers {
			if a != b && rapid.IntRange(0, 99).Draw(t, "r") < density {
				tp.adj[a] = append(tp.adj[a], b)
			}
		}
	}
	return tp
}

// connected is the reference: hop distances from src by plain BFS over
// the full edge list.
func hopDistances(tp topology, src peer.ID) map[peer.ID]int {
	up := func(a, b peer.ID) bool {
		return !slices.Contains(tp.adj[a], b) && !slices.Contains(tp.adj[b], a)
	}
	dist := map[peer.ID]int{src: 0}
	queue := []peer.ID{src}
	for len(queue) > 0 {
		u := queue[0]
		queue = queue[1:]
		for _, v := range tp.peers {
			if _, seen := dist[v]; !seen && v != u && up(u, v) {
				dist[v] = dist[u] + 1
				queue = append(queue, v)
			}
		}
	}
	return dist
}

// TestNextHopsProperties checks, on generated topologies where every peer
// computes on the same reports: forwarding from every peer to every other
// reaches it along a shortest path (so never loops), a path is found
// exactly when the graph connects the two, every next hop is a link the
// peer itself sees up, and the result does not depend on input order.
func TestNextHopsProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		tp := drawTopology(t)
		hops := map[peer.ID]map[peer.ID]peer.ID{}
		for _, p := range tp.peers {
			hops[p] = router.NextHops(p, tp.peers, tp.adj)
		}
		for _, src := range tp.peers {
			want := hopDistances(tp, src)
			for _, dst := range tp.peers {
				if src == dst {
					continue
				}
				_, reach := want[dst]
				_, has := hops[src][dst]
				if reach != has {
					t.Fatalf("%v → %v: path found = %v; graph connects them = %v", src, dst, has, reach)
				}
				if !reach {
					continue
				}
				// Walk the chain of next hops.
				at, n := src, 0
				seen := map[peer.ID]bool{src: true}
				for at != dst {
					next, ok := hops[at][dst]
					if !ok {
						t.Fatalf("%v → %v: chain stops at %v (no next hop)", src, dst, at)
					}
					if slices.Contains(tp.adj[at], next) || slices.Contains(tp.adj[next], at) {
						t.Fatalf("%v → %v: %v forwards over its broken link to %v", src, dst, at, next)
					}
					if seen[next] {
						t.Fatalf("%v → %v: loop at %v", src, dst, next)
					}
					seen[next] = true
					at = next
					n++
				}
				if n != want[dst] {
					t.Fatalf("%v → %v: %d hops; shortest is %d", src, dst, n, want[dst])
				}
			}
		}
		// Stable under permutation of the peers and of every report, and
		// with duplicates.
		perm := rapid.Permutation(tp.peers).Draw(t, "perm")
		perm = append(perm, perm[:len(perm)/2]...)
		adj2 := router.Adjacency{}
		for k, v := range tp.adj {
			adj2[k] = rapid.Permutation(v).Draw(t, "reportPerm")
		}
		for _, p := range tp.peers {
			got := router.NextHops(p, perm, adj2)
			if !maps.Equal(got, hops[p]) {
				t.Fatalf("NextHops(%v) depends on input order: %v vs %v", p, got, hops[p])
			}
		}
	})
}

func TestNextHops(t *testing.T) {
	line := []peer.ID{1, 2, 3, 4, 5}
	// In a line each peer reaches only its neighbours.
	lineAdj := router.Adjacency{}
	for _, a := range line {
		for _, b := range line {
			if d := int(a) - int(b); d > 1 || d < -1 {
				lineAdj[a] = append(lineAdj[a], b)
			}
		}
	}
	tests := []struct {
		name  string
		self  peer.ID
		peers []peer.ID
		adj   router.Adjacency
		want  map[peer.ID]peer.ID
	}{
		{"all direct", 1, []peer.ID{2, 3}, nil, map[peer.ID]peer.ID{2: 2, 3: 3}},
		{"h1-h3 broken, relayed by h2", 1, []peer.ID{2, 3}, router.Adjacency{1: {3}},
			map[peer.ID]peer.ID{2: 2, 3: 2}},
		{"reported by the other end only", 1, []peer.ID{2, 3}, router.Adjacency{3: {1}},
			map[peer.ID]peer.ID{2: 2, 3: 2}},
		{"two relays: lowest ID", 1, []peer.ID{3, 4, 2}, router.Adjacency{1: {3}},
			map[peer.ID]peer.ID{2: 2, 3: 2, 4: 4}},
		{"relay dead: the other one", 1, []peer.ID{2, 3, 4}, router.Adjacency{1: {3, 2}, 3: {2}, 4: {2}},
			map[peer.ID]peer.ID{3: 4, 4: 4}},
		{"no path", 1, []peer.ID{2, 3}, router.Adjacency{1: {3}, 2: {3}},
			map[peer.ID]peer.ID{2: 2}},
		{"line from the end", 1, line, lineAdj, map[peer.ID]peer.ID{2: 2, 3: 2, 4: 2, 5: 2}},
		{"line from the middle", 3, line, lineAdj, map[peer.ID]peer.ID{1: 2, 2: 2, 4: 4, 5: 4}},
		{"self-report and unknown peers ignored", 1, []peer.ID{2}, router.Adjacency{1: {1, 9}, 9: {2}},
			map[peer.ID]peer.ID{2: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := router.NextHops(tt.self, tt.peers, tt.adj)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("NextHops(%v) (-want +got):\n%s", tt.self, diff)
			}
		})
	}
}

func BenchmarkNextHops(b *testing.B) {
	// 1,000 peers; one in ten cannot reach 20 others directly.
	var peers []peer.ID
	for i := range 1000 {
		peers = append(peers, peer.ID(i+1))
	}
	adj := router.Adjacency{}
	for i := 0; i < 1000; i += 10 {
		for j := range 20 {
			adj[peers[i]] = append(adj[peers[i]], peers[(i+1+j*37)%1000])
		}
	}
	b.ResetTimer()
	for range b.N {
		router.NextHops(peers[0], peers, adj)
	}
}
