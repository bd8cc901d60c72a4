package daemon

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/weftmesh/weft/api/client"
	"github.com/weftmesh/weft/ipam"
	"github.com/weftmesh/weft/kube"
	"github.com/weftmesh/weft/peer"
)

var kubeNow = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)

// knode is a Ready Node at 192.168.79.<ip> (0: no address), an hour old.
func knode(name string, ip int) kube.Node {
	n := kube.Node{Name: name, Ready: true, Created: kubeNow.Add(-time.Hour)}
	if ip > 0 {
		n.InternalIP = netip.AddrFrom4([4]byte{192, 168, 79, byte(ip)})
	}
	return n
}

// kpeer is a peer last seen ago before kubeNow (0: never heard from).
func kpeer(name string, id peer.ID, st peer.State, ago time.Duration) peer.Info {
	p := peer.Info{Name: name, ID: id, State: st}
	if ago > 0 {
		p.LastSeen = kubeNow.Add(-ago)
	}
	return p
}

func owner(name string, id peer.ID, owned int64) ipam.OwnerStatus {
	return ipam.OwnerStatus{Name: name, ID: id, Owned: owned}
}

func TestKubeBootstrap(t *testing.T) {
	nodes := []kube.Node{knode("n1", 11), knode("n2", 12), knode("n3", 13), knode("n4", 0)}
	got, err := kubeBootstrap(nodes, "n2", true)
	if err != nil {
		t.Fatalf("kubeBootstrap(n2): %v", err)
	}
	if want := []string{"192.168.79.11", "192.168.79.13"}; !cmp.Equal(got.Targets, want) || got.Nodes != 4 || got.Self.Name != "n2" {
		t.Errorf("kubeBootstrap(n2) = targets %v, %d nodes, self %s; want %v, 4, n2", got.Targets, got.Nodes, got.Self.Name, want)
	}
	if _, err := kubeBootstrap(nodes, "h2", true); !errors.Is(err, kube.ErrNoNode) || !strings.Contains(err.Error(), "NODE_NAME") {
		t.Errorf("kubeBootstrap(h2) = %v; want ErrNoNode saying how the name is set", err)
	}
	if _, err := kubeBootstrap(nodes, "n4", true); err == nil || !strings.Contains(err.Error(), "--advertise") {
		t.Errorf("kubeBootstrap(n4 without an address) = %v; want an error pointing at --advertise", err)
	}
	if _, err := kubeBootstrap(nodes, "n4", false); err != nil {
		t.Errorf("kubeBootstrap(n4, --advertise given) = %v; want nil", err)
	}
}

func TestKubeTargets(t *testing.T) {
	self := netip.MustParseAddr("192.168.79.11")
	tests := []struct {
		name  string
		nodes []kube.Node
		want  []string
	}{
		{"alone", []kube.Node{knode("n1", 11)}, nil},
		{"the others, sorted", []kube.Node{knode("n3", 13), knode("n1", 11), knode("n2", 12)}, []string{"192.168.79.12", "192.168.79.13"}},
		{"a Node without an address yet", []kube.Node{knode("n1", 11), knode("n2", 0)}, nil},
		{"another Node name on our address", []kube.Node{knode("n1", 11), knode("n1-old", 11)}, nil},
		{"two Nodes on one address", []kube.Node{knode("n1", 11), knode("n2", 12), knode("n2b", 12)}, []string{"192.168.79.12"}},
		{"our Node deleted: still not ourselves", []kube.Node{knode("n2", 12)}, []string{"192.168.79.12"}},
	}
	for _, tt := range tests {
		if got := kubeTargets(tt.nodes, "n1", self); !cmp.Equal(got, tt.want) {
			t.Errorf("%s: kubeTargets = %v; want %v", tt.name, got, tt.want)
		}
	}
}

func TestNetworkUp(t *testing.T) {
	const self = peer.ID(1)
	ready := ipam.Status{Status: "ready", Owners: []ipam.OwnerStatus{owner("n1", self, 1024), owner("n2", 2, 1024)}}
	alone := ipam.Status{Status: "ready", Owners: []ipam.OwnerStatus{owner("n1", self, 2048)}}
	tests := []struct {
		name   string
		joined bool
		st     ipam.Status
		ready  bool
		want   bool
	}{
		{"joined and serving pods", true, ready, true, true},
		{"joined, bridge has no address yet", true, ready, false, false},
		{"awaiting consensus", true, ipam.Status{Status: "awaiting consensus (known 1 of quorum 2)"}, false, false},
		{"not joined, others own space", false, ready, true, false},
		{"not joined, the ring's only owner", false, alone, true, true},
	}
	for _, tt := range tests {
		if got := networkUp(self, tt.joined, tt.st, tt.ready); got != tt.want {
			t.Errorf("%s: networkUp = %v; want %v", tt.name, got, tt.want)
		}
	}
}

func TestGonePeers(t *testing.T) {
	const self = peer.ID(1)
	me := kpeer("n1", self, peer.Alive, time.Nanosecond)
	three := []kube.Node{knode("n1", 11), knode("n2", 12), knode("n3", 13)}
	two := []kube.Node{knode("n1", 11), knode("n2", 12)} // n3 deleted
	owners := []ipam.OwnerStatus{owner("n1", self, 4096), owner("n2", 2, 2048), owner("n3", 3, 2048)}
	long := 20 * time.Second
	tests := []struct {
		name   string
		nodes  []kube.Node
		peers  []peer.Info
		owners []ipam.OwnerStatus
		up     time.Duration // this peer's uptime
		want   []gonePeer
	}{
		{"Node deleted, peer stopped long enough: reclaim", two,
			[]peer.Info{me, kpeer("n2", 2, peer.Alive, time.Second), kpeer("n3", 3, peer.Stopped, long)}, owners, time.Hour,
			[]gonePeer{{ID: 3, Name: "n3", Owned: 2048}}},
		{"Node deleted, peer dead: reclaim", two,
			[]peer.Info{me, kpeer("n3", 3, peer.Dead, time.Minute)}, owners, time.Hour,
			[]gonePeer{{ID: 3, Name: "n3", Owned: 2048}}},
		{"Node deleted, peer alive: never", two,
			[]peer.Info{me, kpeer("n3", 3, peer.Alive, time.Second)}, owners, time.Hour, nil},
		{"Node deleted, peer down for 5 s: wait for its last writes", two,
			[]peer.Info{me, kpeer("n3", 3, peer.Stopped, 5*time.Second)}, owners, time.Hour, nil},
		{"Node exists, peer stopped for an hour: never (a stop is not a leave)", three,
			[]peer.Info{me, kpeer("n3", 3, peer.Stopped, time.Hour)}, owners, time.Hour, nil},
		{"rolling restart: every other peer stopped, every Node there", three,
			[]peer.Info{me, kpeer("n2", 2, peer.Stopped, long), kpeer("n3", 3, peer.Stopped, long)}, owners, time.Hour, nil},
		{"this peer restarted in a rolling restart: others not met yet", three,
			[]peer.Info{me}, owners, time.Second, nil},
		{"our own Node not in the list: act on nothing", []kube.Node{knode("n2", 12)},
			[]peer.Info{me, kpeer("n3", 3, peer.Dead, time.Hour)}, owners, time.Hour, nil},
		{"no Nodes at all (not synced): act on nothing", nil,
			[]peer.Info{me, kpeer("n3", 3, peer.Dead, time.Hour)}, owners, time.Hour, nil},
		{"ring owner never met, this peer up long enough: reclaim", two,
			[]peer.Info{me}, owners, time.Minute, []gonePeer{{ID: 3, Name: "n3", Owned: 2048}}},
		{"ring owner never met, this peer just started: wait", two,
			[]peer.Info{me}, owners, 3 * time.Second, nil},
		{"ring owner without a name: cannot match a Node", two,
			[]peer.Info{me}, []ipam.OwnerStatus{owner("", 7, 1024)}, time.Hour, nil},
		{"dead peer owning nothing, Node deleted: forget", two,
			[]peer.Info{me, kpeer("n3", 3, peer.Dead, time.Minute)}, owners[:2], time.Hour,
			[]gonePeer{{ID: 3, Name: "n3"}}},
		{"peer that left, Node deleted: forget", two,
			[]peer.Info{me, kpeer("n3", 3, peer.Left, time.Minute)}, owners[:2], time.Hour,
			[]gonePeer{{ID: 3, Name: "n3"}}},
		{"renamed peer: down under its old name, up under its Node's: never", three,
			[]peer.Info{me, kpeer("h3", 3, peer.Dead, time.Hour), kpeer("n3", 3, peer.Alive, time.Second)},
			[]ipam.OwnerStatus{owner("h3", 3, 2048)}, time.Hour, nil},
		{"Node re-created empty, old identity down, new one up: only the old one", two,
			[]peer.Info{me, kpeer("n3", 9, peer.Alive, time.Second)},
			[]ipam.OwnerStatus{owner("n3", 3, 2048), owner("n3", 9, 1024)}, time.Hour,
			[]gonePeer{{ID: 3, Name: "n3", Owned: 2048}}},
		{"this peer's own Node gone: never itself", []kube.Node{knode("n1", 11)},
			[]peer.Info{kpeer("n1", self, peer.Alive, time.Nanosecond)}, []ipam.OwnerStatus{owner("n1", self, 4096), owner("ghost", self, 1)}, time.Hour, nil},
		{"sorted by name", []kube.Node{knode("n1", 11)},
			[]peer.Info{me, kpeer("n3", 3, peer.Dead, time.Hour), kpeer("n2", 2, peer.Stopped, time.Hour)}, owners, time.Hour,
			[]gonePeer{{ID: 2, Name: "n2", Owned: 2048}, {ID: 3, Name: "n3", Owned: 2048}}},
	}
	for _, tt := range tests {
		got := gonePeers(self, "n1", tt.nodes, tt.peers, tt.owners, tt.up, kubeNow)
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%s: gonePeers (-want +got):\n%s", tt.name, diff)
		}
	}
}

func TestBootstrapProblem(t *testing.T) {
	waiting := "awaiting consensus (known 1 of quorum 2)"
	if got := bootstrapProblem(true, 3, "ready", []string{"n3"}); got != "" {
		t.Errorf("ring ready: bootstrapProblem = %q; want none", got)
	}
	if got := bootstrapProblem(false, 3, waiting, []string{"n3"}); got != "" {
		t.Errorf("explicit --ipalloc-init: bootstrapProblem = %q; want none", got)
	}
	got := bootstrapProblem(true, 3, waiting, []string{"n2", "n3"})
	for _, want := range []string{"needs 2 of the 3 Nodes", "consensus=3", "Nodes without a weft peer: n2, n3", "holds the bootstrap back"} {
		if !strings.Contains(got, want) {
			t.Errorf("bootstrapProblem = %q; want it to say %q", got, want)
		}
	}
}

func TestKubeView(t *testing.T) {
	const self = peer.ID(1)
	me := kpeer("n1", self, peer.Alive, time.Nanosecond)
	three := []kube.Node{knode("n1", 11), knode("n2", 12), knode("n3", 13)}
	base := kubeInput{Self: "n1", Nodes: three, Synced: true, Consensus: true, StartNodes: 3, IPAM: "ready", Up: time.Hour, Now: kubeNow,
		Peers:  []peer.Info{me, kpeer("n2", 2, peer.Alive, time.Second), kpeer("n3", 3, peer.Alive, time.Second)},
		Owners: []ipam.OwnerStatus{owner("n1", self, 4096), owner("n2", 2, 2048), owner("n3", 3, 2048)}}
	with := func(change func(*kubeInput)) kubeInput {
		in := base
		in.Nodes, in.Peers, in.Owners = slices.Clone(base.Nodes), slices.Clone(base.Peers), slices.Clone(base.Owners)
		change(&in)
		return in
	}
	newNode := knode("n4", 14)
	newNode.Created = kubeNow.Add(-10 * time.Second)
	tests := []struct {
		name             string
		in               kubeInput
		nodesWithoutPeer []string
		peersWithoutNode []string
		problems         []string // each a substring of one problem, in order
	}{
		{"healthy", base, []string{}, []string{}, nil},
		{"a Node without a peer", with(func(in *kubeInput) { in.Peers = in.Peers[:2] }),
			[]string{}, []string{}, nil}, // n3 still a ring owner: its peer is known
		{"a Node whose weft never ran", with(func(in *kubeInput) {
			in.Peers, in.Owners = in.Peers[:2], in.Owners[:2]
		}), []string{"n3"}, []string{}, []string{"node n3 has no weft peer: is the weft pod running there?"}},
		{"a new Node gets a grace", with(func(in *kubeInput) { in.Nodes = append(three, newNode) }),
			[]string{"n4"}, []string{}, nil},
		{"this peer just started", with(func(in *kubeInput) {
			in.Peers, in.Owners, in.Up = in.Peers[:2], in.Owners[:2], 5*time.Second
		}), []string{"n3"}, []string{}, nil},
		{"a peer without a Node, up", with(func(in *kubeInput) {
			in.Peers = append(in.Peers, kpeer("h9", 9, peer.Alive, time.Second))
			in.Owners = append(in.Owners, owner("h9", 9, 1024))
		}), []string{}, []string{"h9"}, []string{"peer h9 has no Node object: it will be reclaimed once it is down"}},
		{"a peer without a Node, up, owning nothing", with(func(in *kubeInput) {
			in.Peers = append(in.Peers, kpeer("h9", 9, peer.Alive, time.Second))
		}), []string{}, []string{"h9"}, []string{"peer h9 has no Node object: it will be forgotten once it is down"}},
		{"a deleted Node's peer, stopped", with(func(in *kubeInput) {
			in.Nodes = three[:2]
			in.Peers[2].State = peer.Stopped
		}), []string{}, []string{"n3"}, []string{"peer n3 has no Node object and is stopped: its 2048 addresses are being reclaimed"}},
		{"a peer that left is not missing its Node", with(func(in *kubeInput) {
			in.Nodes, in.Owners = three[:2], in.Owners[:2]
			in.Peers[2].State = peer.Left
		}), []string{}, []string{}, nil},
		{"a Node whose peer left has no peer", with(func(in *kubeInput) {
			in.Owners = in.Owners[:2]
			in.Peers[2].State = peer.Left
		}), []string{"n3"}, []string{}, []string{"node n3 has no weft peer"}},
		{"our own Node deleted", with(func(in *kubeInput) { in.Nodes = three[1:] }),
			[]string{}, []string{"n1"}, []string{"this peer's Node n1 is not in the API server"}},
		{"bootstrap held back", with(func(in *kubeInput) {
			in.Peers, in.Owners, in.IPAM = in.Peers[:1], nil, "awaiting consensus (known 1 of quorum 2)"
		}), []string{"n2", "n3"}, []string{}, []string{"node n2 has no weft peer", "node n3 has no weft peer", "needs 2 of the 3 Nodes"}},
	}
	for _, tt := range tests {
		ks, problems := kubeView(tt.in)
		if !cmp.Equal(ks.NodesWithoutPeer, tt.nodesWithoutPeer) || !cmp.Equal(ks.PeersWithoutNode, tt.peersWithoutNode) {
			t.Errorf("%s: kubeView lists nodes without peer %q, peers without node %q; want %q, %q",
				tt.name, ks.NodesWithoutPeer, ks.PeersWithoutNode, tt.nodesWithoutPeer, tt.peersWithoutNode)
		}
		if len(problems) != len(tt.problems) {
			t.Errorf("%s: kubeView problems %q; want %d like %q", tt.name, problems, len(tt.problems), tt.problems)
			continue
		}
		for i, want := range tt.problems {
			if !strings.Contains(problems[i], want) {
				t.Errorf("%s: problem %d = %q; want it to say %q", tt.name, i, problems[i], want)
			}
		}
	}
}

func TestKubeViewNodes(t *testing.T) {
	in := kubeInput{Self: "n1", Synced: true, Up: time.Hour, Now: kubeNow,
		Nodes: []kube.Node{{Name: "n1", InternalIP: netip.MustParseAddr("192.168.79.11"), Ready: true, NetworkAvailable: true, Created: kubeNow}, knode("n2", 0)},
		Peers: []peer.Info{kpeer("n1", 1, peer.Alive, time.Nanosecond), kpeer("n2", 2, peer.Stopped, time.Minute)}}
	ks, _ := kubeView(in)
	want := &client.KubeStatus{Node: "n1", Synced: true, NetworkAvailable: true,
		Nodes: []client.KubeNode{
			{Name: "n1", InternalIP: "192.168.79.11", Ready: true, NetworkAvailable: true, Peer: "0000000000000001", PeerState: "alive"},
			{Name: "n2", Ready: true, Peer: "0000000000000002", PeerState: "stopped"},
		}, NodesWithoutPeer: []string{}, PeersWithoutNode: []string{}}
	if diff := cmp.Diff(want, ks); diff != "" {
		t.Errorf("kubeView (-want +got):\n%s", diff)
	}

	in.Synced, in.Up = false, time.Second
	if ks, problems := kubeView(in); len(ks.Nodes) != 0 || len(problems) != 0 {
		t.Errorf("not synced, just started: kubeView = %+v, %q; want no nodes, no problems", ks, problems)
	}
	in.Up = time.Minute
	if _, problems := kubeView(in); len(problems) != 1 || !strings.Contains(problems[0], "list and watch nodes") {
		t.Errorf("not synced for a minute: problems %q; want the informer named with its RBAC", problems)
	}
}
