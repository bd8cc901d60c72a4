package api_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/weftmesh/weft/api"
	"github.com/weftmesh/weft/api/apitest"
	"github.com/weftmesh/weft/api/client"
)

// TestStatusPageKubernetes: in Kubernetes mode the page shows the Nodes
// with their peers and the daemon's Kubernetes problems.
func TestStatusPageKubernetes(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	const problem = "node n4 has no weft peer: is the weft pod running there?"
	ts := startWith(t, func(f *apitest.Fakes) api.Backends {
		st := &f.Reporter.Snapshot
		st.Kubernetes = &client.KubeStatus{Node: "h1", Synced: true, NetworkAvailable: true,
			Nodes: []client.KubeNode{
				{Name: "h1", InternalIP: "192.168.50.1", Ready: true, NetworkAvailable: true, Peer: st.Peers[0].ID, PeerState: "alive"},
				{Name: "h2", InternalIP: "192.168.50.2", Ready: true, NetworkAvailable: true, Peer: st.Peers[1].ID, PeerState: "alive"},
				{Name: "n4", InternalIP: "192.168.50.4"},
			},
			NodesWithoutPeer: []string{"n4"}, PeersWithoutNode: []string{"h3"}}
		st.Problems = append(st.Problems, problem, "peer h3 has no Node object and is dead: its 262144 addresses are being reclaimed")
		return f.Backends()
	})
	out := apitest.OutDir(t)
	if os.Getenv("WEFT_TEST_OUT") != "" {
		out = filepath.Join(out, "kubernetes")
		os.MkdirAll(out, 0o755)
	}
	rep := apitest.CheckPage(t, ts.base+"/", 3, out)
	if want := []string{"h1", "h2", "n4"}; !cmp.Equal(rep.KubeNodes, want) {
		t.Errorf("page Kubernetes nodes = %v; want %v", rep.KubeNodes, want)
	}
	if !slices.ContainsFunc(rep.Problems, func(p string) bool { return strings.Contains(p, problem) }) {
		t.Errorf("page problems = %q; want %q", rep.Problems, problem)
	}
}

// TestStatusPagePolicy: with NetworkPolicy enforced, the page shows the
// policy summary and the last drops with their deciding policies.
func TestStatusPagePolicy(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	ts := startWith(t, func(f *apitest.Fakes) api.Backends { return f.Backends() })
	out := apitest.OutDir(t)
	if os.Getenv("WEFT_TEST_OUT") != "" {
		out = filepath.Join(out, "policy")
		os.MkdirAll(out, 0o755)
	}
	rep := apitest.CheckPage(t, ts.base+"/", 3, out)
	want := []string{"ingress x/c x/a 80/TCP x/allow-b, x/deny-all default deny"}
	if !cmp.Equal(rep.Drops, want) {
		t.Errorf("page drops = %q; want %q", rep.Drops, want)
	}
}
