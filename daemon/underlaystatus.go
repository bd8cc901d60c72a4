package daemon

// What status, the status page and /metrics show of the underlay pool
// (underlay.go): its ring, the addresses held back from pods, the local
// macvlan pods, and the peers whose ring of another range is refused.

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/weftmesh/weft/api/client"
	"github.com/weftmesh/weft/ipam"
	"github.com/weftmesh/weft/peer"
)

// underlayPods lists the local macvlan pods for status.
func (d *Daemon) underlayPods() []client.Pod {
	var out []client.Pod
	for _, a := range d.underlayAllocations() {
		id, ifname, ok := strings.Cut(a.ID, ":")
		if !ok {
			ifname = "eth0"
		}
		out = append(out, client.Pod{ContainerID: id, IfName: ifname, Name: a.Name, Address: a.Addr.Addr().String(), Mode: "macvlan"})
	}
	return out
}

// underlayStatus is the "underlay" object of status.
func (d *Daemon) underlayStatus(names map[peer.ID]string, up map[peer.ID]bool) *client.UnderlayStatus {
	u := d.under
	if u == nil {
		return nil
	}
	u.mu.Lock()
	gw, host := u.gateway, u.host
	u.mu.Unlock()
	st := &client.UnderlayStatus{IPAMStatus: ipamStatusOf(u.alloc.Status(), names, up), Master: u.master, Taken: []client.TakenAddress{}}
	if gw.IsValid() {
		st.Gateway = gw.String()
	}
	if host.IsValid() {
		st.HostAddress = host.Addr().String()
	}
	for _, a := range u.alloc.Allocations() {
		if addr, ok := strings.CutPrefix(a.ID, underlayTakenPfx); ok {
			st.Taken = append(st.Taken, client.TakenAddress{Address: addr, Reason: a.Name})
		}
	}
	sort.Slice(st.Taken, func(i, j int) bool { return st.Taken[i].Address < st.Taken[j].Address })
	return st
}

// refusalProblems says which peers a ring refused for their range.
func refusalProblems(pool, flag string, ours netip.Prefix, refused []ipam.Refusal, names map[peer.ID]string) []string {
	var out []string
	for _, r := range refused {
		name := names[r.Peer]
		if name == "" {
			name = r.Peer.String()
		}
		out = append(out, fmt.Sprintf("peer %s runs the %s with range %s, this peer %s: their rings refuse each other; launch every peer with the same %s",
			name, pool, r.Range, ours, flag))
	}
	return out
}

// underlayProblems lists the underlay pool's problems in words.
func (d *Daemon) underlayProblems(names map[peer.ID]string) []string {
	out := refusalProblems("pod ring", "--ipalloc-range", d.cfg.IPAllocRange, d.alloc.Refused(), names)
	if d.under == nil {
		return out
	}
	if st := d.under.alloc.Status(); st.Status != "ready" {
		out = append(out, "underlay IPAM "+st.Status+": macvlan pods cannot get addresses yet")
	}
	return append(out, refusalProblems("underlay ring", "--underlay-range", d.cfg.UnderlayRange, d.under.alloc.Refused(), names)...)
}

// underlayCounters adds the pool's counters for /metrics.
func (d *Daemon) underlayCounters(c map[string]float64) {
	if d.under == nil {
		return
	}
	c["underlay_probes_total"] = float64(d.under.probes.Load())
	c["underlay_taken_total"] = float64(d.under.taken.Load())
	c["gossip_dropped_total"] += float64(d.under.ch.Dropped())
	c["gossip_rejected_total"] += float64(d.under.ch.Rejected())
}
