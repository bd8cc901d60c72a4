package api_test

import (
	"testing"

	"github.com/weftmesh/weft/api"
	"github.com/weftmesh/weft/api/apitest"
	"github.com/weftmesh/weft/api/client"
)

// TestMetricsKubernetes: the Kubernetes gauges follow the status's view,
// and are absent outside Kubernetes mode.
func TestMetricsKubernetes(t *testing.T) {
	fams := scrape(t, startServer(t))
	for _, name := range []string{"weft_kube_nodes", "weft_kube_nodes_without_peer", "weft_kube_peers_without_node"} {
		if _, ok := fams[name]; ok {
			t.Errorf("%s present outside Kubernetes mode", name)
		}
	}
	ts := startWith(t, func(f *apitest.Fakes) api.Backends {
		f.Reporter.Snapshot.Kubernetes = &client.KubeStatus{Node: "h1", Synced: true,
			Nodes:            []client.KubeNode{{Name: "h1"}, {Name: "h2"}, {Name: "n4"}},
			NodesWithoutPeer: []string{"n4"}, PeersWithoutNode: []string{"h3", "h9"}}
		return f.Backends()
	})
	fams = scrape(t, ts)
	for name, want := range map[string]float64{"weft_kube_nodes": 3, "weft_kube_nodes_without_peer": 1, "weft_kube_peers_without_node": 2} {
		if got := value(fams, name); got != want {
			t.Errorf("%s = %v; want %v", name, got, want)
		}
	}
}
