package router

// Egress masquerade, and no connection tracking for weft's own tunnels.
//
// Pods have addresses of the pod range, which the rest of the world does not
// route back to us; traffic leaving the range must leave with the host's
// address. One table owned by weft, so that reset is one table deletion and
// nothing of anybody else's ruleset is touched:
//
//	table ip weft {
//	  chain postrouting {
//	    type nat hook postrouting priority srcnat; policy accept;
//	    ip saddr 10.32.0.0/12 ip daddr != 10.32.0.0/12 masquerade comment "weft masquerade 10.32.0.0/12"
//	  }
//	  chain raw-prerouting {
//	    type filter hook prerouting priority raw; policy accept;
//	    udp dport 4789 notrack comment "weft tunnel notrack udp 4789"
//	  }
//	  chain raw-output {
//	    type filter hook output priority raw; policy accept;
//	    udp dport 4789 notrack comment "weft tunnel notrack udp 4789"
//	    udp sport 4789 notrack comment "weft tunnel notrack udp 4789"
//	  }
//	}
//
// Pod-to-pod traffic (daddr inside the range) is never translated: pods see
// each other's real addresses. The nat chain switches connection tracking
// on for every packet of the namespace; the encapsulated packets of the
// VXLAN and WireGuard ports are exempt (nothing translates them, the pod
// packets inside are tracked on their own, and on the receiving side they
// would be tracked one by one, before GRO). Pod packets are never exempt:
// replies of kube-proxy's and hostPort's DNAT look like pod-to-pod packets
// and need their conntrack entry. The table drops nothing, so forwarding
// stays governed by the host's own policy (which must accept the tunnel
// ports by port, not by "ct state established"). The comments record what
// each rule is: NftGet reads them back so the reconciler can compare
// without decoding expressions. NftSet replaces the table in one netlink
// transaction, so there is never a moment without the rules.

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

const (
	nftTable           = "weft"
	nftChain           = "postrouting"
	nftChainPrerouting = "raw-prerouting"
	nftChainOutput     = "raw-output"
	nftCommentPfx      = "weft masquerade "
	nftNotrackPfx      = "weft tunnel notrack udp "
)

func (k *NetlinkKernel) nftConn() (*nftables.Conn, error) {
	var opts []nftables.ConnOption
	if k.ns >= 0 {
		opts = append(opts, nftables.WithNetNSFd(int(k.ns)))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables conn: %w", err)
	}
	return c, nil
}

func (k *NetlinkKernel) nftFind(c *nftables.Conn) (*nftables.Table, error) {
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, fmt.Errorf("nft list tables: %w", err)
	}
	for _, t := range ts {
		if t.Name == nftTable {
			return t, nil
		}
	}
	return nil, nil
}

// NftGet implements Kernel. Each rule's comment says what it is; a rule
// missing from one of the chains (deleted by hand) drops its part from the
// answer, so the reconciler rewrites the table.
func (k *NetlinkKernel) NftGet() (NftRules, error) {
	c, err := k.nftConn()
	if err != nil {
		return NftRules{}, err
	}
	t, err := k.nftFind(c)
	if err != nil || t == nil {
		return NftRules{}, err
	}
	comments := func(chain string) []string {
		rules, err := c.GetRules(t, &nftables.Chain{Name: chain, Table: t})
		if err != nil {
			return nil // chain missing: NftSet recreates it
		}
		var out []string
		for _, r := range rules {
			if s, ok := userdata.GetString(r.UserData, userdata.TypeComment); ok {
				out = append(out, s)
			}
		}
		return out
	}
	var got NftRules
	for _, s := range comments(nftChain) {
		if p, err := netip.ParsePrefix(strings.TrimPrefix(s, nftCommentPfx)); err == nil && strings.HasPrefix(s, nftCommentPfx) {
			got.Masquerade = p
		}
	}
	out := map[string]int{}
	for _, s := range comments(nftChainOutput) {
		out[s]++
	}
	for _, s := range comments(nftChainPrerouting) {
		port, err := strconv.ParseUint(strings.TrimPrefix(s, nftNotrackPfx), 10, 16)
		if err != nil || !strings.HasPrefix(s, nftNotrackPfx) || out[s] != 2 {
			continue
		}
		got.NotrackUDP = append(got.NotrackUDP, uint16(port))
	}
	slices.Sort(got.NotrackUDP)
	return got, nil
}

// NftSet implements Kernel.
func (k *NetlinkKernel) NftSet(want NftRules) error {
	if want.Masquerade.IsValid() && !want.Masquerade.Addr().Is4() {
		return fmt.Errorf("nft masquerade %v: IPv4 range required", want.Masquerade)
	}
	c, err := k.nftConn()
	if err != nil {
		return err
	}
	old, err := k.nftFind(c)
	if err != nil {
		return err
	}
	if old != nil {
		c.DelTable(old)
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: nftTable})
	if want.Masquerade.IsValid() {
		addMasquerade(c, t, want.Masquerade)
	}
	if len(want.NotrackUDP) > 0 {
		pre := c.AddChain(&nftables.Chain{Name: nftChainPrerouting, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw})
		out := c.AddChain(&nftables.Chain{Name: nftChainOutput, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityRaw})
		for _, port := range want.NotrackUDP {
			comment := userdata.AppendString(nil, userdata.TypeComment, nftNotrackPfx+strconv.Itoa(int(port)))
			c.AddRule(&nftables.Rule{Table: t, Chain: pre, Exprs: notrackUDP(udpDport, port), UserData: comment})
			c.AddRule(&nftables.Rule{Table: t, Chain: out, Exprs: notrackUDP(udpDport, port), UserData: comment})
			c.AddRule(&nftables.Rule{Table: t, Chain: out, Exprs: notrackUDP(udpSport, port), UserData: comment})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nft set table %s: %w", nftTable, err)
	}
	return nil
}

// addMasquerade adds the postrouting chain masquerading rng → elsewhere.
func addMasquerade(c *nftables.Conn, t *nftables.Table, rng netip.Prefix) {
	ch := c.AddChain(&nftables.Chain{Name: nftChain, Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	rng = rng.Masked()
	mask := make([]byte, 4)
	binary.BigEndian.PutUint32(mask, ^uint32(0)<<(32-rng.Bits()))
	if rng.Bits() == 0 {
		mask = []byte{0, 0, 0, 0}
	}
	net4 := rng.Addr().As4()
	match := func(offset uint32, op expr.CmpOp) []expr.Any {
		return []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
			&expr.Cmp{Op: op, Register: 1, Data: net4[:]},
		}
	}
	exprs := append(match(12, expr.CmpOpEq), match(16, expr.CmpOpNeq)...) // saddr, daddr
	exprs = append(exprs, &expr.Masq{})
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs,
		UserData: userdata.AppendString(nil, userdata.TypeComment, nftCommentPfx+rng.String())})
}

// Offsets of the UDP ports in the transport header.
const (
	udpSport = 0
	udpDport = 2
)

// notrackUDP is `meta l4proto udp udp sport|dport PORT notrack`.
func notrackUDP(offset uint32, port uint16) []expr.Any {
	p := make([]byte, 2)
	binary.BigEndian.PutUint16(p, port)
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: offset, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p},
		&expr.Notrack{},
	}
}

// NftDelete implements Kernel.
func (k *NetlinkKernel) NftDelete() error {
	c, err := k.nftConn()
	if err != nil {
		return err
	}
	t, err := k.nftFind(c)
	if err != nil || t == nil {
		return err
	}
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nft delete table %s: %w", nftTable, err)
	}
	return nil
}
