package client

// The JSON documents of weft's HTTP API. Field names are a contract: the CLI
// `--json` output, the status page, the CNI plugin and operators' scripts all
// read them. Add fields; never rename or remove one.

// Status is `GET /status` and `weft status --json`.
type Status struct {
	Name          string     `json:"name"`
	ID            string     `json:"id"` // 16 hex digits
	Version       string     `json:"version"`
	Transport     string     `json:"transport"` // wireguard, vxlan, direct or auto
	Encrypted     bool       `json:"encrypted"` // gossip and datapath encrypted
	Insecure      bool       `json:"insecure"`  // running without a cluster secret
	UptimeSeconds float64    `json:"uptime_seconds"`
	Peers         []Peer     `json:"peers"` // every known peer, this one included
	IPAM          IPAMStatus `json:"ipam"`
	DNS           DNSStatus  `json:"dns"`
	Pods          []Pod      `json:"pods"`     // local pods (CNI attachments)
	Problems      []string   `json:"problems"` // what an operator should look at, in words
	// Kubernetes is the Kubernetes view; absent outside Kubernetes mode.
	Kubernetes *KubeStatus `json:"kubernetes,omitempty"`
}

// Peer is one peer of the mesh as this peer sees it.
type Peer struct {
	Name          string  `json:"name"`
	ID            string  `json:"id"`
	Address       string  `json:"address"` // underlay address
	State         string  `json:"state"`   // alive, dead, stopped, left
	Self          bool    `json:"self"`
	Transport     string  `json:"transport"`      // how this peer reaches it
	Endpoint      string  `json:"endpoint"`       // datapath endpoint host:port
	Bridge        string  `json:"bridge"`         // its bridge address on the pod network
	LastSeen      string  `json:"last_seen"`      // RFC 3339, empty if never
	LastHandshake string  `json:"last_handshake"` // RFC 3339, empty if none (WireGuard only)
	RxBytes       int64   `json:"rx_bytes"`
	TxBytes       int64   `json:"tx_bytes"`
	RTTMillis     float64 `json:"rtt_ms"`           // last gossip probe round trip; 0 if unknown
	Reason        string  `json:"reason,omitempty"` // why the link is not healthy
	Node          string  `json:"node,omitempty"`   // its Kubernetes Node (Kubernetes mode; "" = none)
}

// KubeStatus is the Kubernetes view of `weft status` (Kubernetes mode):
// the cluster's Nodes matched by name with the mesh's peers.
type KubeStatus struct {
	Node             string     `json:"node"`               // this peer's Node
	Synced           bool       `json:"synced"`             // the Node informer has listed the API server
	NetworkAvailable bool       `json:"network_available"`  // this Node's NetworkUnavailable is False, set by weft
	Nodes            []KubeNode `json:"nodes"`              // every Node, by name
	NodesWithoutPeer []string   `json:"nodes_without_peer"` // Nodes that no weft peer (other than one that left) is named after
	PeersWithoutNode []string   `json:"peers_without_node"` // peers and ring owners with no Node of their name
}

// KubeNode is one Node and its weft peer.
type KubeNode struct {
	Name             string `json:"name"`
	InternalIP       string `json:"internal_ip"`       // "" while it has none
	Ready            bool   `json:"ready"`             // the Node's Ready condition is True
	NetworkAvailable bool   `json:"network_available"` // NetworkUnavailable is False, set by weft
	Peer             string `json:"peer"`              // ID of its weft peer; "" = none
	PeerState        string `json:"peer_state"`        // alive, dead or stopped; "" = no peer, or one never met (known from the ring)
}

// IPAMStatus is `GET /status/ipam`; the top-level fields describe this peer.
type IPAMStatus struct {
	Range     string      `json:"range"`  // e.g. 10.32.0.0/12
	Status    string      `json:"status"` // "ready" or e.g. "awaiting consensus (known 1 of quorum 2)"
	Owned     int64       `json:"owned"`  // addresses this peer owns
	Free      int64       `json:"free"`
	Allocated int64       `json:"allocated"` // this peer's allocations, the bridge's included
	Owners    []IPAMOwner `json:"owners"`    // every owner of the ring
	Ranges    []IPAMRange `json:"ranges"`    // the ring, in address order
}

// IPAMOwner summarises one peer's share of the ring.
type IPAMOwner struct {
	Name      string  `json:"name"`
	ID        string  `json:"id"`
	Owned     int64   `json:"owned"`
	Share     float64 `json:"share"` // owned / size of the range, 0..1
	Free      int64   `json:"free"`
	Reachable bool    `json:"reachable"`
}

// IPAMRange is one run of the ring: [Start, End] inclusive, one owner.
type IPAMRange struct {
	Start     string `json:"start"`
	End       string `json:"end"`
	Size      int64  `json:"size"`
	Owner     string `json:"owner"` // owner's ID
	OwnerName string `json:"owner_name"`
	Free      int64  `json:"free"` // as last advertised by the owner
	Reachable bool   `json:"reachable"`
}

// DNSStatus is `GET /status/dns`.
type DNSStatus struct {
	Domain  string     `json:"domain"` // e.g. weft.local.
	Listen  []string   `json:"listen"`
	Entries []DNSEntry `json:"entries"`
}

// DNSEntry is one name→address record.
type DNSEntry struct {
	Name        string `json:"name"` // fully qualified, with trailing dot
	Address     string `json:"address"`
	Owner       string `json:"owner"` // owner's ID
	OwnerName   string `json:"owner_name"`
	ContainerID string `json:"container_id,omitempty"`
}

// Pod is one local CNI attachment.
type Pod struct {
	ContainerID string `json:"container_id"`
	IfName      string `json:"ifname,omitempty"`
	Name        string `json:"name,omitempty"` // POD.NAMESPACE when known
	Address     string `json:"address"`
}

// AllocateRequest is `POST /ip/allocate`. ID is the allocation's key: a
// container ID (the CNI plugin uses CONTAINERID when IfName is eth0, else
// CONTAINERID:IFNAME) or any operator-chosen string.
type AllocateRequest struct {
	ID     string `json:"id"`
	IfName string `json:"ifname,omitempty"`
	Pod    string `json:"pod,omitempty"` // POD.NAMESPACE, shown on the status page
}

// Allocation is the answer to allocate and lookup: everything a CNI plugin
// needs to wire a pod, in one round trip.
type Allocation struct {
	ID      string  `json:"id"`
	Address string  `json:"address"`           // CIDR with the ring's prefix length, e.g. 10.32.0.5/12
	Gateway string  `json:"gateway,omitempty"` // the bridge address
	Bridge  string  `json:"bridge,omitempty"`  // bridge interface name
	MTU     int     `json:"mtu,omitempty"`     // pod MTU
	DNS     *PodDNS `json:"dns,omitempty"`
}

// PodDNS is the resolver configuration a pod should get.
type PodDNS struct {
	Nameservers []string `json:"nameservers"`
	Domain      string   `json:"domain"`
	Search      []string `json:"search"`
}

// ReleaseRequest is `POST /ip/release`: releases the allocation and removes
// the DNS records registered for that container. Idempotent.
type ReleaseRequest struct {
	ID string `json:"id"`
}

// GCRequest is `POST /ip/gc`: release every allocation of this peer whose ID
// is not in Keep (the bridge's is always kept).
type GCRequest struct {
	Keep []string `json:"keep"`
}

// GCResult lists what GC released.
type GCResult struct {
	Released []string `json:"released"`
}

// DNSRequest is `POST /dns/add` and `POST /dns/remove`. For remove, an empty
// Address removes every address of Name; ContainerID alone removes that
// container's records.
type DNSRequest struct {
	Name        string `json:"name"`
	Address     string `json:"address,omitempty"`
	ContainerID string `json:"container_id,omitempty"`
}

// DNSLookup is the answer of `GET /dns/lookup?name=NAME`.
type DNSLookup struct {
	Name      string   `json:"name"`
	Addresses []string `json:"addresses"`
}

// PeersRequest is `POST /connect` and `POST /forget`.
type PeersRequest struct {
	Peers []string `json:"peers"`
}

// RmpeerRequest is `POST /rmpeer`.
type RmpeerRequest struct {
	Name string `json:"name"`
}

// RmpeerResult says how much space was taken over.
type RmpeerResult struct {
	Name      string `json:"name"`
	Reclaimed int64  `json:"reclaimed"` // addresses
}

// Ready is `GET /ready`: whether the peer can serve pods (CNI STATUS).
type Ready struct {
	Ready  bool   `json:"ready"`
	Reason string `json:"reason,omitempty"`
}

// Error is the body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
}
