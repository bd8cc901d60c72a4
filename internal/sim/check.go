package sim

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/weftmesh/weft/peer"
)

// MembersAgree is nil when every live peer sees every live peer alive and
// every killed peer not alive.
func (c *Cluster) MembersAgree() error {
	all := c.Peers()
	live := c.Live()
	for _, p := range live {
		states := map[string]peer.State{}
		for _, i := range p.D.Mesh().Peers() {
			states[i.Name] = i.State
		}
		for _, q := range all {
			st := states[q.Name]
			if !q.killed && st != peer.Alive {
				return fmt.Errorf("%s sees %s %q; want alive", p.Name, q.Name, st)
			}
			if q.killed && st == peer.Alive {
				return fmt.Errorf("%s sees killed %s alive", p.Name, q.Name)
			}
		}
	}
	return nil
}

// RingAgree is nil when every live peer holds the same, complete ring.
func (c *Cluster) RingAgree() error {
	live := c.Live()
	if len(live) == 0 {
		return nil
	}
	if len(live[0].D.Allocator().Ranges()) == 0 {
		return fmt.Errorf("%s has no ring", live[0].Name)
	}
	want := live[0].D.Allocator().Summary()
	for _, p := range live[1:] {
		if string(p.D.Allocator().Summary()) != string(want) {
			return fmt.Errorf("%s and %s hold different rings", p.Name, live[0].Name)
		}
	}
	return nil
}

// DNSAgree is nil when every live peer holds the same DNS records.
func (c *Cluster) DNSAgree() error {
	live := c.Live()
	if len(live) == 0 || live[0].D.DNS() == nil {
		return nil
	}
	want := live[0].D.DNS().Summary()
	for _, p := range live[1:] {
		if string(p.D.DNS().Summary()) != string(want) {
			return fmt.Errorf("%s and %s hold different DNS records", p.Name, live[0].Name)
		}
	}
	return nil
}

// OwnAddresses is nil when every live peer has its bridge address.
func (c *Cluster) OwnAddresses() error {
	for _, p := range c.Live() {
		if !p.D.Mesh().Peers()[0].Meta.Bridge.IsValid() {
			return fmt.Errorf("%s has no bridge address yet", p.Name)
		}
	}
	return nil
}

// Agree is nil when membership, the ring and DNS agree everywhere and
// every live peer has its address.
func (c *Cluster) Agree() error {
	for _, f := range []func() error{c.MembersAgree, c.OwnAddresses, c.RingAgree, c.DNSAgree} {
		if err := f(); err != nil {
			return err
		}
	}
	return nil
}

// Wait polls cond every poll interval until it is nil, and returns how long
// that took; or ctx's error with cond's last complaint.
func Wait(ctx context.Context, cond func() error) (time.Duration, error) {
	start := time.Now()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		err := cond()
		if err == nil {
			return time.Since(start), nil
		}
		select {
		case <-ctx.Done():
			return time.Since(start), fmt.Errorf("%w: %v", ctx.Err(), err)
		case <-t.C:
		}
	}
}

// DeadSeen is nil when every live peer sees peer i as dead.
func (c *Cluster) DeadSeen(i int) func() error {
	return func() error {
		name := c.Peers()[i].Name
		for _, p := range c.Live() {
			for _, info := range p.D.Mesh().Peers() {
				if info.Name == name && info.State != peer.Dead {
					return fmt.Errorf("%s sees %s %q", p.Name, name, info.State)
				}
			}
		}
		return nil
	}
}

// NoAddressTwice is nil when no address is held twice among the live
// peers' bridges and the given pod addresses, and each lies in a range
// that the agreed ring gives its peer.
func (c *Cluster) NoAddressTwice(pods map[string]netip.Prefix) error {
	live := c.Live()
	if len(live) == 0 {
		return nil
	}
	ranges := live[0].D.Allocator().Ranges()
	owner := func(a netip.Addr) peer.ID {
		for id, ps := range ranges {
			for _, p := range ps {
				if p.Contains(a) {
					return id
				}
			}
		}
		return 0
	}
	held := map[netip.Addr]string{}
	check := func(a netip.Addr, who string, by peer.ID) error {
		if prev, ok := held[a]; ok {
			return fmt.Errorf("address %s held by %s and %s", a, prev, who)
		}
		held[a] = who
		if o := owner(a); o != by {
			return fmt.Errorf("address %s of %s lies in the range of %s, not of its peer %s", a, who, o, by)
		}
		return nil
	}
	for _, p := range live {
		self := p.D.Mesh().Peers()[0]
		if b := self.Meta.Bridge; b.IsValid() {
			if err := check(b, p.Name+"'s bridge", self.ID); err != nil {
				return err
			}
		}
		if pf, ok := pods["ctr-"+p.Name]; ok {
			if err := check(pf.Addr(), "the pod of "+p.Name, self.ID); err != nil {
				return err
			}
		}
	}
	return nil
}

// Progress describes how far the live peers are from agreement: how many
// see every live peer alive, have their address, and how many distinct
// rings and DNS record sets they hold.
func (c *Cluster) Progress() string {
	live := c.Live()
	full, addr := 0, 0
	rings, recs := map[string]int{}, map[string]int{}
	for _, p := range live {
		up := 0
		for _, i := range p.D.Mesh().Peers() {
			if i.State == peer.Alive {
				up++
			}
		}
		if up >= len(live) {
			full++
		}
		if p.D.Mesh().Peers()[0].Meta.Bridge.IsValid() {
			addr++
		}
		rings[string(p.D.Allocator().Summary())]++
		if p.D.DNS() != nil {
			recs[string(p.D.DNS().Summary())]++
		}
	}
	return fmt.Sprintf("live %d, see all %d, have address %d, distinct rings %d, distinct DNS sets %d",
		len(live), full, addr, len(rings), len(recs))
}

// Explain describes peer i's own view, to diagnose a peer others see dead.
func (c *Cluster) Explain(i int) string {
	p := c.Peers()[i]
	up, seenUp := 0, 0
	for _, info := range p.D.Mesh().Peers() {
		if info.State == peer.Alive {
			up++
		}
	}
	for _, q := range c.Live() {
		for _, info := range q.D.Mesh().Peers() {
			if info.Name == p.Name && info.State == peer.Alive {
				seenUp++
			}
		}
	}
	return fmt.Sprintf("%s sees %d alive, is seen alive by %d of %d; packets queued %d, streams queued %d, member syncs %d",
		p.Name, up, seenUp, len(c.Live()), len(p.tr.PacketCh()), len(p.tr.StreamCh()), p.D.Mesh().MemberSyncs())
}

// RoutesFollowRing is nil when every live peer's kernel routes every
// range the peer's ring gives another owner.
func (c *Cluster) RoutesFollowRing() error {
	for _, p := range c.Live() {
		routed := map[string]bool{}
		for _, r := range p.kernel.Routes() {
			dst, _, _ := strings.Cut(r, " ")
			routed[dst] = true
		}
		self := p.D.Mesh().Peers()[0].ID
		for owner, prefixes := range p.D.Allocator().Ranges() {
			if owner == self {
				continue
			}
			for _, pfx := range prefixes {
				if !routed[pfx.String()] {
					return fmt.Errorf("%s has no route to %v (owner %v)", p.Name, pfx, owner)
				}
			}
		}
	}
	return nil
}

// Rings describes each distinct ring the live peers hold: how many hold
// it, one of them, its seed, its owners and the holder's IPAM status, to
// diagnose a run whose rings do not agree.
func (c *Cluster) Rings() string {
	type ring struct {
		n       int
		example string
		status  string
		owners  int
	}
	rings := map[string]*ring{}
	var order []string
	for _, p := range c.Live() {
		sum := string(p.D.Allocator().Summary())
		r := rings[sum]
		if r == nil {
			st := p.D.Allocator().Status()
			r = &ring{example: p.Name, status: st.Status, owners: len(st.Owners)}
			rings[sum] = r
			order = append(order, sum)
		}
		r.n++
	}
	var b strings.Builder
	for _, sum := range order {
		r := rings[sum]
		seed := ""
		if len(sum) >= 9 {
			seed = fmt.Sprintf("%x", sum[1:9]) // after the magic byte (ipam/summary.go)
		}
		fmt.Fprintf(&b, "ring seed %s held by %d (e.g. %s: %s, %d owners); ", seed, r.n, r.example, r.status, r.owners)
	}
	return b.String()
}
