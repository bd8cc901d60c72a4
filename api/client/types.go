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
	// Underlay is the underlay pool of macvlan pods; absent without
	// --underlay-range.
	Underlay *UnderlayStatus `json:"underlay,omitempty"`
	DNS      DNSStatus       `json:"dns"`
	Pods     []Pod           `json:"pods"`     // local pods (CNI attachments)
	Problems []string        `json:"problems"` // what an operator should look at, in words
	// Kubernetes is the Kubernetes view; absent outside Kubernetes mode.
	Kubernetes *KubeStatus `json:"kubernetes,omitempty"`
	// Policy is NetworkPolicy enforcement (enabled in Kubernetes mode).
	Policy PolicyStatus `json:"policy"`
}

// PolicyStatus is the "policy" object of `weft status --json`.
type PolicyStatus struct {
	Enabled bool `json:"enabled"` // this peer enforces NetworkPolicy (Kubernetes mode)
	// Synced: the kernel reflects every object the informers have seen
	// (and every pod this peer attached).
	Synced   bool `json:"synced"`
	Policies int  `json:"policies"` // NetworkPolicies in the whole cluster
	Pods     int  `json:"pods"`     // pods in the cluster that have an IP
	Isolated int  `json:"isolated"` // local pods that some policy selects
}

// PolicyReport is `GET /policy/status` and `weft status policy`: the
// status object and what an operator needs to know besides.
type PolicyReport struct {
	Status   PolicyStatus `json:"status"`
	Node     string       `json:"node"`     // the Node whose pods this peer enforces for
	Problems []string     `json:"problems"` // policies or parts weft cannot express, apply errors, in words
	// AppliedAt is when the kernel last took a program (RFC 3339, "" =
	// never); ApplyMillis how long building and applying it took.
	AppliedAt   string      `json:"applied_at"`
	ApplyMillis float64     `json:"apply_ms"`
	Changes     int         `json:"changes"` // nftables operations of that apply (0: nothing differed)
	Error       string      `json:"error,omitempty"`
	CutFlows    uint64      `json:"cut_flows"` // conntrack entries deleted because a change denies them
	Drops       uint64      `json:"drops"`     // dropped packets logged since the peer started
	Pods        []PolicyPod `json:"pods"`      // this node's pods with an address
}

// PolicyPod is one local pod and the policies that isolate it.
type PolicyPod struct {
	Pod     string   `json:"pod"` // namespace/name
	Address string   `json:"address"`
	Ingress []string `json:"ingress"` // policies selecting it for ingress; empty: open
	Egress  []string `json:"egress"`  // same for egress
}

// PolicyDrop is one kind of dropped packet (`GET /policy/drops`, `weft
// policy drops`): drops of one pod's chain with the same source,
// destination, port and protocol are counted together.
type PolicyDrop struct {
	Time      string   `json:"time"`  // last seen, RFC 3339 with fractions
	Count     int      `json:"count"` // logged packets (the log is rate-limited per pod)
	Direction string   `json:"direction"`
	Pod       string   `json:"pod"`      // namespace/name of the local pod whose policy dropped it
	Src       string   `json:"src"`      // address
	SrcName   string   `json:"src_name"` // namespace/name for a pod, "node N (IP)" for a node, else the address
	Dst       string   `json:"dst"`
	DstName   string   `json:"dst_name"`
	Port      int      `json:"port"` // destination port; 0 for ICMP
	Protocol  string   `json:"protocol"`
	Policies  []string `json:"policies"` // the policies that isolate Pod in Direction (none of their rules allows)
	Reason    string   `json:"reason"`   // in words, e.g. "default deny: selected by x/deny-all, no rule allows"
}

// PolicyDropCount is the number of logged drops of one local pod in one
// direction, for /metrics.
type PolicyDropCount struct {
	Direction string
	Namespace string
	Pod       string
	Count     uint64
}

// ExplainRequest is `GET /policy/explain?src=SRC&dst=DST&port=N&protocol=P`:
// SRC and DST are namespace/pod or an address.
type ExplainRequest struct {
	Src      string `json:"src"`
	Dst      string `json:"dst"`
	Port     int    `json:"port"`
	Protocol string `json:"protocol"` // TCP, UDP, SCTP or ICMP
}

// Explanation is the answer of `weft policy explain`: the evaluator's
// verdict and what decides it on each side.
type Explanation struct {
	Src      string         `json:"src"` // namespace/name, "node N (IP)" or the address
	SrcIP    string         `json:"src_ip"`
	Dst      string         `json:"dst"`
	DstIP    string         `json:"dst_ip"`
	Port     int            `json:"port"`
	Protocol string         `json:"protocol"`
	Allowed  bool           `json:"allowed"`
	Verdict  string         `json:"verdict"` // the whole verdict in one line
	Egress   PolicyDecision `json:"egress"`  // at the source
	Ingress  PolicyDecision `json:"ingress"` // at the destination
}

// PolicyDecision is one side's judgement.
type PolicyDecision struct {
	Allowed bool `json:"allowed"`
	// Reason: not-a-pod, not-isolated, from-own-node, allowed-by or
	// default-deny.
	Reason   string       `json:"reason"`
	Text     string       `json:"text"`     // in words
	Selected []string     `json:"selected"` // policies that isolate the pod in this direction
	Rules    []PolicyRule `json:"rules"`    // the rules that allow, when Reason is allowed-by
}

// PolicyRule is one rule of a policy.
type PolicyRule struct {
	Policy    string `json:"policy"` // namespace/name
	Direction string `json:"direction"`
	Index     int    `json:"index"` // in the policy's ingress or egress list
	Text      string `json:"text"`  // the rule in words, e.g. "from pods {pod=b}; to TCP/80"
}

// Peer is one peer of the mesh as this peer sees it.
type Peer struct {
	Name          string  `json:"name"`
	ID            string  `json:"id"`
	Address       string  `json:"address"` // underlay address
	State         string  `json:"state"`   // alive, dead, stopped, left
	Self          bool    `json:"self"`
	Transport     string  `json:"transport"`      // how this peer reaches it
	Via           string  `json:"via"`            // the peer that relays to it (no direct link); "" = direct
	Endpoint      string  `json:"endpoint"`       // datapath endpoint host:port
	Bridge        string  `json:"bridge"`         // its bridge address on the pod network
	LastSeen      string  `json:"last_seen"`      // RFC 3339, empty if never
	LastHandshake string  `json:"last_handshake"` // RFC 3339, empty if none (WireGuard only)
	RxBytes       int64   `json:"rx_bytes"`
	TxBytes       int64   `json:"tx_bytes"`
	RTTMillis     float64 `json:"rtt_ms"`           // last gossip probe round trip; 0 if unknown
	Reason        string  `json:"reason,omitempty"` // why the link is not healthy
	// LinkTimeoutSeconds is how long the direct link may stay silent
	// before it is judged down and routed around: 3 s, more past 50 peers
	// on a link that carries no traffic (the probe budget); 0 = not probed.
	LinkTimeoutSeconds float64 `json:"link_timeout_s,omitempty"`
	Node               string  `json:"node,omitempty"` // its Kubernetes Node (Kubernetes mode; "" = none)
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
	// Changed is when the ring or its ownership last changed in this
	// peer's view (RFC 3339; "" = not since it started): after a mass
	// start, the latest over the peers is when they came to agree.
	Changed string `json:"changed,omitempty"`
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
	Mode        string `json:"mode,omitempty"` // "routed" (overlay) or "macvlan" (underlay)
}

// AllocateRequest is `POST /ip/allocate`. ID is the allocation's key: a
// container ID (the CNI plugin uses CONTAINERID when IfName is eth0, else
// CONTAINERID:IFNAME) or any operator-chosen string.
type AllocateRequest struct {
	ID     string `json:"id"`
	IfName string `json:"ifname,omitempty"`
	Pod    string `json:"pod,omitempty"` // POD.NAMESPACE, shown on the status page
	// Pool is the address pool: "" or PoolOverlay for the pod range (a
	// routed pod), PoolUnderlay for the underlay range (a macvlan pod).
	Pool string `json:"pool,omitempty"`
}

// The address pools of AllocateRequest.Pool.
const (
	PoolOverlay  = "overlay"  // the pod range: routed pods behind the bridge
	PoolUnderlay = "underlay" // --underlay-range: macvlan pods on the LAN
)

// Allocation is the answer to allocate and lookup: everything a CNI plugin
// needs to wire a pod, in one round trip.
type Allocation struct {
	ID      string  `json:"id"`
	Address string  `json:"address"`           // CIDR with the ring's prefix length, e.g. 10.32.0.5/12
	Gateway string  `json:"gateway,omitempty"` // the bridge address
	Bridge  string  `json:"bridge,omitempty"`  // bridge interface name
	MTU     int     `json:"mtu,omitempty"`     // pod MTU
	DNS     *PodDNS `json:"dns,omitempty"`
	// Underlay pool only (Pool "underlay"): Address has the underlay
	// subnet's prefix length and Gateway is the LAN gateway ("" = none
	// known).
	Pool        string `json:"pool,omitempty"`         // "underlay" for a macvlan pod's address
	Master      string `json:"master,omitempty"`       // the device holding the peer's underlay address
	HostAddress string `json:"host_address,omitempty"` // the host's weft-mv address: the pods' next hop to PodRange
	PodRange    string `json:"pod_range,omitempty"`    // the overlay pod range, routed via HostAddress
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

// UnderlayStatus is the "underlay" object of `weft status --json`: the
// second ring (--underlay-range) and what the peer knows of the LAN.
type UnderlayStatus struct {
	IPAMStatus
	Master      string `json:"master"`       // device holding the peer's underlay address
	Gateway     string `json:"gateway"`      // LAN gateway given to pods; "" = none known
	HostAddress string `json:"host_address"` // this host's weft-mv address; "" = not yet
	// Taken are addresses of this peer's space that pods never get: a
	// machine on the LAN answered the ARP probe, or it is a peer's or the
	// gateway's address.
	Taken []TakenAddress `json:"taken"`
}

// TakenAddress is an underlay address held back from pods.
type TakenAddress struct {
	Address string `json:"address"`
	Reason  string `json:"reason"` // e.g. "answered ARP from 02:..", "gateway", "peer h2"
}
