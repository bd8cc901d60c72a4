package apitest

import (
	"time"

	"github.com/weftmesh/weft/api/client"
)

// Identities of the fake mesh.
const (
	SelfID = "8f3a9c2e11d0b7a4" // h1, this peer
	H2ID   = "1c0ffee000000002"
	H3ID   = "d00dfeed00000003"
	Range  = "10.32.0.0/12"
)

// Mesh returns h1's view of a three-peer mesh, as the daemon would report
// it: h2 alive, h3 dead and owning the unreachable 10.40.0.0/14; h1 owns
// half of the range, with three allocations (the bridge's and two pods,
// each with two names), and h2 has one DNS record. Times are relative to
// now; h1 has been up 3 h 25 min.
func Mesh() *client.Status {
	now := time.Now().UTC()
	ago := func(d time.Duration) string { return now.Add(-d).Format(time.RFC3339) }
	const web, api = "4b1d2c3e5f60718293a4b5c6d7e8f901", "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b"
	const quarter = 1 << 18
	h3Reason := "no gossip for 7m0s (failure detector: dead); no WireGuard handshake for 9m0s"
	dns := func(name, addr, id string) client.DNSEntry {
		return client.DNSEntry{Name: name + ".weft.local.", Address: addr, Owner: SelfID, OwnerName: "h1", ContainerID: id}
	}
	return &client.Status{
		Name: "h1", ID: SelfID, Version: "0.1.0-test", Transport: "wireguard", Encrypted: true,
		UptimeSeconds: (3*time.Hour + 25*time.Minute).Seconds(),
		Peers: []client.Peer{
			{Name: "h1", ID: SelfID, Address: "192.168.50.1", State: "alive", Self: true, Transport: "wireguard",
				Endpoint: "192.168.50.1:51820", Bridge: "10.32.0.1", LastSeen: ago(0)},
			{Name: "h2", ID: H2ID, Address: "192.168.50.2", State: "alive", Transport: "wireguard",
				Endpoint: "192.168.50.2:51820", Bridge: "10.36.0.1", LastSeen: ago(time.Second),
				LastHandshake: ago(42 * time.Second), RxBytes: 18_734_112, TxBytes: 9_210_554, LinkTimeoutSeconds: 6},
			{Name: "h3", ID: H3ID, Address: "192.168.50.3", State: "dead", Transport: "wireguard",
				Endpoint: "192.168.50.3:51820", Bridge: "10.40.0.1", LastSeen: ago(7 * time.Minute),
				LastHandshake: ago(9 * time.Minute), RxBytes: 1_204_331, TxBytes: 2_990_001, Reason: h3Reason},
		},
		IPAM: client.IPAMStatus{
			Range: Range, Status: "ready", Owned: 2 * quarter, Free: 2*quarter - 3, Allocated: 3,
			Owners: []client.IPAMOwner{
				{Name: "h1", ID: SelfID, Owned: 2 * quarter, Share: 0.5, Free: 2*quarter - 3, Reachable: true},
				{Name: "h2", ID: H2ID, Owned: quarter, Share: 0.25, Free: quarter - 7, Reachable: true},
				{Name: "h3", ID: H3ID, Owned: quarter, Share: 0.25, Free: quarter - 4},
			},
			Ranges: []client.IPAMRange{
				{Start: "10.32.0.0", End: "10.35.255.255", Size: quarter, Owner: SelfID, OwnerName: "h1", Free: quarter - 3, Reachable: true},
				{Start: "10.36.0.0", End: "10.39.255.255", Size: quarter, Owner: H2ID, OwnerName: "h2", Free: quarter - 7, Reachable: true},
				{Start: "10.40.0.0", End: "10.43.255.255", Size: quarter, Owner: H3ID, OwnerName: "h3", Free: quarter - 4},
				{Start: "10.44.0.0", End: "10.47.255.255", Size: quarter, Owner: SelfID, OwnerName: "h1", Free: quarter, Reachable: true},
			},
		},
		DNS: client.DNSStatus{Domain: "weft.local.", Listen: []string{"10.32.0.1:53"}, Entries: []client.DNSEntry{
			{Name: "db.default.weft.local.", Address: "10.36.0.4", Owner: H2ID, OwnerName: "h2", ContainerID: "c0ffee42d00d"},
			dns("web-0.default", "10.32.0.2", web), dns("web", "10.32.0.2", web),
			dns("api-7d9f.shop", "10.32.0.3", api), dns("api", "10.32.0.3", api),
		}},
		Pods: []client.Pod{
			{ContainerID: web, IfName: "eth0", Name: "web-0.default", Address: "10.32.0.2/12"},
			{ContainerID: api, IfName: "eth0", Name: "api-7d9f.shop", Address: "10.32.0.3/12"},
		},
		Problems: []string{"peer h3 is dead: " + h3Reason},
		Policy:   PolicyReport().Status,
	}
}

// PolicyReport is h1's NetworkPolicy report: x/a is isolated for ingress
// by x/deny-all and x/allow-b, x/c is open.
func PolicyReport() *client.PolicyReport {
	return &client.PolicyReport{
		Status: client.PolicyStatus{Enabled: true, Synced: true, Policies: 2, Pods: 9, Isolated: 1},
		Node:   "h1", Problems: []string{"networkpolicy z/sctp: ingress rule 0 port 0: protocol SCTP: not supported by weft: this kernel has no SCTP, so the port never matches (the policy still isolates its pods)"},
		AppliedAt: time.Now().UTC().Add(-time.Minute).Format(time.RFC3339), ApplyMillis: 3.2, Changes: 4, Drops: 7,
		Pods: []client.PolicyPod{
			{Pod: "x/a", Address: "10.32.0.2", Ingress: []string{"x/allow-b", "x/deny-all"}, Egress: []string{}},
			{Pod: "x/c", Address: "10.32.0.3", Ingress: []string{}, Egress: []string{}},
		},
	}
}

// PolicyDrops are h1's last drops: x/c's connections to x/a on port 80,
// denied by x/a's ingress.
func PolicyDrops() []client.PolicyDrop {
	return []client.PolicyDrop{{
		Time: time.Now().UTC().Add(-5 * time.Second).Format(time.RFC3339Nano), Count: 7, Direction: "ingress", Pod: "x/a",
		Src: "10.32.0.3", SrcName: "x/c", Dst: "10.32.0.2", DstName: "x/a", Port: 80, Protocol: "TCP",
		Policies: []string{"x/allow-b", "x/deny-all"}, Reason: "default deny: selected by x/allow-b, x/deny-all, no rule allows",
	}}
}
