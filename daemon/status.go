package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/weftmesh/weft/api/client"
	"github.com/weftmesh/weft/ipam"
	"github.com/weftmesh/weft/peer"
)

// Status assembles this peer's view of the mesh (`weft status --json`).
func (d *Daemon) Status(ctx context.Context) (*client.Status, error) {
	peers := d.mesh.Peers()
	names := map[peer.ID]string{}
	for _, p := range peers {
		names[p.ID] = p.Name
	}
	st := &client.Status{
		Name:          d.id.Name,
		ID:            d.id.ID.String(),
		Version:       Version,
		Transport:     d.transportName(),
		Encrypted:     !d.cfg.Insecure,
		Insecure:      d.cfg.Insecure,
		UptimeSeconds: time.Since(d.started).Seconds(),
		Peers:         []client.Peer{},
		Pods:          []client.Pod{},
		Problems:      []string{},
	}
	stats := d.router.Stats()
	for _, p := range peers {
		cp := client.Peer{Name: p.Name, ID: p.ID.String(), Address: addrString(p.Addr), State: string(p.State),
			Self: p.ID == d.id.ID, LastSeen: timeString(p.LastSeen), RTTMillis: float64(p.RTT) / float64(time.Millisecond)}
		if p.Meta.Bridge.IsValid() {
			cp.Bridge = p.Meta.Bridge.String()
		}
		if cp.Self {
			cp.Transport = st.Transport
		} else {
			cp.Transport = d.router.PeerTransport(p.ID)
			if s, ok := stats[p.ID]; ok {
				cp.Endpoint = s.Endpoint
				cp.LastHandshake = timeString(s.LastHandshake)
				cp.RxBytes, cp.TxBytes = s.RxBytes, s.TxBytes
			}
			cp.Reason = linkReason(p, cp)
		}
		st.Peers = append(st.Peers, cp)
	}
	st.IPAM = d.ipamStatus(names)
	st.DNS = d.dnsStatus(names)
	st.Pods = d.podList()
	st.Problems = d.problems(st)
	return st, nil
}

// linkReason says, in words, why a link to a peer is not healthy.
func linkReason(p peer.Info, cp client.Peer) string {
	switch p.State {
	case peer.Dead:
		return fmt.Sprintf("unreachable since %s (failure detector); 'weft rmpeer %s' reclaims its addresses if it is gone for good", cp.LastSeen, p.Name)
	case peer.Left:
		return "left the mesh"
	case peer.Suspect:
		return "not answering probes"
	}
	if !p.Meta.Bridge.IsValid() {
		return "no bridge address yet (its IPAM is not ready)"
	}
	if cp.Transport == "wireguard" && cp.LastHandshake == "" {
		return "no WireGuard handshake yet"
	}
	return ""
}

func (d *Daemon) ipamStatus(names map[peer.ID]string) client.IPAMStatus {
	s := d.alloc.Status()
	out := client.IPAMStatus{Range: s.Range.String(), Status: s.Status, Owned: s.Owned, Free: s.Free,
		Allocated: s.Allocated, Owners: []client.IPAMOwner{}, Ranges: []client.IPAMRange{}}
	for _, o := range s.Owners {
		name := o.Name
		if name == "" {
			name = names[o.ID]
		}
		out.Owners = append(out.Owners, client.IPAMOwner{Name: name, ID: o.ID.String(), Owned: o.Owned,
			Share: o.Share, Free: o.Free, Reachable: o.Reachable})
	}
	for _, r := range s.Runs {
		name := r.OwnerName
		if name == "" {
			name = names[r.Owner]
		}
		out.Ranges = append(out.Ranges, client.IPAMRange{Start: r.Start.String(), End: r.End.String(), Size: r.Size,
			Owner: r.Owner.String(), OwnerName: name, Free: r.Free, Reachable: r.Reachable})
	}
	return out
}

func (d *Daemon) dnsStatus(names map[peer.ID]string) client.DNSStatus {
	out := client.DNSStatus{Domain: d.cfg.DNSDomain, Listen: []string{}, Entries: []client.DNSEntry{}}
	if d.dns == nil {
		return out
	}
	for _, a := range d.dns.ListenAddrs() {
		out.Listen = append(out.Listen, a.String())
	}
	for _, e := range d.dns.Entries() {
		out.Entries = append(out.Entries, client.DNSEntry{Name: e.Name, Address: e.Addr.String(),
			Owner: e.Owner.String(), OwnerName: names[e.Owner], ContainerID: e.ContainerID})
	}
	return out
}

// podList is this peer's allocations other than the bridge, with the pod
// name from the CNI request or, after a restart, from its DNS record.
func (d *Daemon) podList() []client.Pod {
	byContainer := map[string]string{}
	if d.dns != nil {
		dom := "." + strings.TrimSuffix(d.cfg.DNSDomain, ".") + "."
		for _, e := range d.dns.Entries() {
			if e.Owner == d.id.ID && e.ContainerID != "" {
				byContainer[e.ContainerID] = strings.TrimSuffix(e.Name, dom)
			}
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	out := []client.Pod{}
	for _, a := range d.alloc.Status().Allocations {
		if a.ID == ipam.BridgeID {
			continue
		}
		name := d.pods[a.ID]
		if name == "" {
			name = byContainer[a.ID]
		}
		id, ifname, ok := strings.Cut(a.ID, ":")
		if !ok {
			ifname = "eth0" // the CNI plugin keys eth0 attachments by container ID alone
		}
		out = append(out, client.Pod{ContainerID: id, IfName: ifname, Name: name, Address: a.Addr.String()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ContainerID < out[j].ContainerID })
	return out
}

// problems lists, in words, what an operator should look at.
func (d *Daemon) problems(st *client.Status) []string {
	out := []string{}
	if st.Insecure {
		out = append(out, "running --insecure: gossip is not encrypted and pod traffic crosses the network in clear")
	}
	if st.IPAM.Status != "ready" {
		out = append(out, "IPAM "+st.IPAM.Status+": pods cannot get addresses yet")
	}
	for _, o := range st.IPAM.Owners {
		if !o.Reachable && o.Owned > 0 {
			out = append(out, fmt.Sprintf("%d addresses owned by unreachable peer %s — run 'weft rmpeer %s' if it is gone", o.Owned, o.Name, o.Name))
		}
	}
	var joins []string
	for target, why := range d.mesh.JoinErrors() {
		joins = append(joins, fmt.Sprintf("cannot join %s: %s", target, why))
	}
	sort.Strings(joins)
	return append(out, joins...)
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func timeString(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}
