package daemon

// The policy snapshot: what the informers say of the cluster, merged with
// what this peer knows better than the API server, as one policy.Snapshot.
//
// This peer knows two things first:
//
//   - Which pod holds each of its addresses. weft-cni names the pod
//     (K8S_POD_NAME, K8S_POD_NAMESPACE) when it allocates, and the name is
//     stored with the allocation, so a pod has its address here from CNI
//     ADD on, while the kubelet writes it into the API only after the
//     sandbox is up. A pod of this node is programmed at every address
//     allocated to it here, so it is isolated from its first packet.
//   - Which addresses are no longer a pod's. The API may still show a
//     deleted pod with an address this peer has since given to a new pod;
//     an address allocated here to another pod is not the old pod's.
//
// The informer gives everything else: labels (the Pod object exists
// before its sandbox, so ADD can wait for it), namespaces, policies and
// the pods of other nodes. Pods in the host network share their node's
// address and are not judged; finished pods (Succeeded, Failed) have no
// sandbox and their address may be another pod's. Two pods of other
// nodes that claim one address (a deleted pod whose address was reused)
// are settled for the one still running, then the newer.

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"

	"github.com/weftmesh/weft/ipam"
	"github.com/weftmesh/weft/kube"
	"github.com/weftmesh/weft/policy"
)

// attached is a pod this peer attached: an allocation named after a pod.
type attached struct {
	Namespace, Name string
	Addr            netip.Addr
}

func (a attached) key() string { return a.Namespace + "/" + a.Name }

// splitPodName splits weft-cni's "NAME.NAMESPACE" (namespaces have no
// dots; pod names may).
func splitPodName(s string) (namespace, name string, ok bool) {
	i := strings.LastIndexByte(s, '.')
	if i <= 0 || i == len(s)-1 {
		return "", "", false
	}
	return s[i+1:], s[:i], true
}

// attachedPods returns the allocations named after pods.
func attachedPods(allocs []ipam.Allocation) []attached {
	var out []attached
	for _, a := range allocs {
		if a.ID == ipam.BridgeID {
			continue
		}
		ns, name, ok := splitPodName(a.Name)
		if !ok {
			continue
		}
		out = append(out, attached{Namespace: ns, Name: name, Addr: a.Addr.Addr()})
	}
	return out
}

// snapshotInput is what buildSnapshot merges.
type snapshotInput struct {
	View  kube.PolicyView
	Self  string      // this node
	Nodes []kube.Node // from the Node informer
	// NodeAddrs are more addresses of nodes' host network namespaces
	// (bridge addresses, the node-local DNS address), by node.
	NodeAddrs map[string][]netip.Addr
	Allocs    []ipam.Allocation // this peer's
}

// snapshotInfo is what the status says of a snapshot.
type snapshotInfo struct {
	Pods int // pods of the cluster with an address (any network), as the status counts them
	// Unknown are the pods attached here that the Pod informer does not
	// list (yet): no labels, so they are not programmed.
	Unknown []attached
}

// buildSnapshot merges the informers' view with this peer's allocations.
func buildSnapshot(in snapshotInput) (policy.Snapshot, snapshotInfo) {
	var info snapshotInfo
	snap := policy.Snapshot{Namespaces: in.View.Namespaces, Policies: in.View.Policies}

	att := attachedPods(in.Allocs)
	owner := map[netip.Addr]string{} // address → the pod (namespace/name) it is allocated to here
	byPod := map[string][]netip.Addr{}
	for _, a := range att {
		owner[a.Addr] = a.key()
		byPod[a.key()] = append(byPod[a.key()], a.Addr)
	}
	for _, addrs := range byPod {
		slices.SortFunc(addrs, netip.Addr.Compare)
	}

	known := map[string]bool{}
	var remote []*policy.Pod // other nodes' pods with an address: conflicts settled below
	remoteOf := map[*policy.Pod]kube.Pod{}
	for _, kp := range in.View.Pods {
		key := kp.Namespace + "/" + kp.Name
		known[key] = true
		local := kp.Node == in.Self
		if kp.IP.IsValid() || (local && len(byPod[key]) > 0) {
			info.Pods++
		}
		if kp.HostNetwork || kp.Finished {
			continue
		}
		p := policy.Pod{Namespace: kp.Namespace, Name: kp.Name, Labels: kp.Labels, Node: kp.Node, IP: kp.IP, Ports: kp.Ports}
		if !local {
			if p.IP.IsValid() {
				q := p
				remote = append(remote, &q)
				remoteOf[&q] = kp
			} else {
				snap.Pods = append(snap.Pods, p)
			}
			continue
		}
		// This node's pod: the allocations decide its addresses.
		if o, ok := owner[p.IP]; ok && o != key {
			p.IP = netip.Addr{} // the API's address is another pod's now
		}
		addrs := byPod[key]
		if p.IP.IsValid() && !slices.Contains(addrs, p.IP) {
			addrs = append([]netip.Addr{p.IP}, addrs...)
		}
		if len(addrs) == 0 {
			snap.Pods = append(snap.Pods, p) // labels still count for selection
			continue
		}
		for _, a := range addrs {
			q := p
			q.IP = a
			snap.Pods = append(snap.Pods, q)
		}
	}
	for _, a := range att {
		if !known[a.key()] {
			info.Unknown = append(info.Unknown, a)
		}
	}

	// Other nodes' pods: an address claimed by this node's allocations,
	// or by a pod still running, or by a newer pod, is not the others'.
	slices.SortStableFunc(remote, func(a, b *policy.Pod) int {
		ka, kb := remoteOf[a], remoteOf[b]
		if ka.Deleting != kb.Deleting {
			if ka.Deleting {
				return 1
			}
			return -1
		}
		return kb.Created.Compare(ka.Created) // newer first
	})
	claimed := map[netip.Addr]bool{}
	for a := range owner {
		claimed[a] = true
	}
	for _, p := range remote {
		if claimed[p.IP] {
			p.IP = netip.Addr{}
		} else {
			claimed[p.IP] = true
		}
		snap.Pods = append(snap.Pods, *p)
	}
	slices.SortFunc(snap.Pods, func(a, b policy.Pod) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name), a.IP.Compare(b.IP))
	})

	for _, n := range in.Nodes {
		node := policy.Node{Name: n.Name}
		if n.InternalIP.IsValid() {
			node.Addrs = append(node.Addrs, n.InternalIP)
		}
		for _, a := range in.NodeAddrs[n.Name] {
			if a.IsValid() && !slices.Contains(node.Addrs, a) {
				node.Addrs = append(node.Addrs, a)
			}
		}
		snap.Nodes = append(snap.Nodes, node)
	}
	return snap, info
}
