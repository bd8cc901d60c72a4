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

// hopDistances is the reference: hop distances from src by plain BFS
// over the links that neither end reports.
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
// computes on the same reports (symmetric ones, as a real break gives
// once both ends have reported it, and one-sided ones, as a peer whose
// control plane is down leaves them):
//   - forwarding from every peer to every other never loops: the chain of
//     next hops ends at the destination within n hops;
//   - no hop crosses a link that both ends report broken, and only the
//     last hop may cross a link that one end reports (a direct attempt to
//     a peer that has not confirmed the break);
//   - a route is found exactly when the destination is direct or the
//     graph without reported links connects the two, and with symmetric
//     reports it is a shortest path;
//   - the result does not depend on the order of the inputs.
func TestNextHopsProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		tp := drawTopology(t)
		symmetric := rapid.Bool().Draw(t, "symmetric")
		if symmetric {
			for a, bs := range tp.adj {
				for _, b := range bs {
					if !slices.Contains(tp.adj[b], a) {
						tp.adj[b] = append(tp.adj[b], a)
					}
				}
			}
		}
		reported := func(a, b peer.ID) bool { return slices.Contains(tp.adj[a], b) }
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
				confirmed := reported(src, dst) && reported(dst, src)
				_, reach := want[dst]
				_, has := hops[src][dst]
				if has != (!confirmed || reach) {
					t.Fatalf("%v → %v: route found = %v; link confirmed broken = %v, graph connects them = %v", src, dst, has, confirmed, reach)
				}
				if !has {
					continue
				}
				at, n := src, 0
				seen := map[peer.ID]bool{src: true}
				for at != dst {
					next, ok := hops[at][dst]
					if !ok {
						t.Fatalf("%v → %v: chain stops at %v (no next hop)", src, dst, at)
					}
					switch {
					case reported(at, next) && reported(next, at):
						t.Fatalf("%v → %v: %v forwards over a link both ends report broken, to %v", src, dst, at, next)
					case (reported(at, next) || reported(next, at)) && next != dst:
						t.Fatalf("%v → %v: %v relays through %v over a link reported broken", src, dst, at, next)
					}
					if seen[next] {
						t.Fatalf("%v → %v: loop at %v", src, dst, next)
					}
					seen[next] = true
					at = next
					n++
				}
				if symmetric && n != want[dst] {
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
		{"h1-h3 broken, both ends report it: relayed by h2", 1, []peer.ID{2, 3}, router.Adjacency{1: {3}, 3: {1}},
			map[peer.ID]peer.ID{2: 2, 3: 2}},
		{"reported by one end only (the other's control plane may be down): direct", 1, []peer.ID{2, 3}, router.Adjacency{1: {3}},
			map[peer.ID]peer.ID{2: 2, 3: 3}},
		{"two relays: lowest ID", 1, []peer.ID{3, 4, 2}, router.Adjacency{1: {3}, 3: {1}},
			map[peer.ID]peer.ID{2: 2, 3: 2, 4: 4}},
		{"relay 2 died (reports nothing): the other one", 1, []peer.ID{2, 3, 4}, router.Adjacency{1: {3, 2}, 3: {1, 2}, 4: {2}},
			map[peer.ID]peer.ID{2: 2, 3: 4, 4: 4}},
		{"no path", 1, []peer.ID{2, 3}, router.Adjacency{1: {3}, 3: {1, 2}, 2: {3}},
			map[peer.ID]peer.ID{2: 2}},
		{"line from the end", 1, line, lineAdj, map[peer.ID]peer.ID{2: 2, 3: 2, 4: 2, 5: 2}},
		{"line from the middle", 3, line, lineAdj, map[peer.ID]peer.ID{1: 2, 2: 2, 4: 4, 5: 4}},
		{"self-report and unknown peers ignored", 1, []peer.ID{2}, router.Adjacency{1: {1, 9}, 9: {2, 1}},
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
	// 1,000 peers; one in ten cannot reach 20 others directly, and those
	// report it back (peer 1 among them: 20 breadth-first searches).
	var peers []peer.ID
	for i := range 1000 {
		peers = append(peers, peer.ID(i+1))
	}
	adj := router.Adjacency{}
	for i := 0; i < 1000; i += 10 {
		for j := range 20 {
			o := peers[(i+1+j*37)%1000]
			adj[peers[i]] = append(adj[peers[i]], o)
			adj[o] = append(adj[o], peers[i])
		}
	}
	b.ResetTimer()
	for range b.N {
		router.NextHops(peers[0], peers, adj)
	}
}
