package router

// Egress masquerade.
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
//	}
//
// Pod-to-pod traffic (daddr inside the range) is never translated: pods see
// each other's real addresses. The table has no filter chain and drops
// nothing, so forwarding stays governed by the host's own policy. The
// comment records the masqueraded range: NftGet reads it back so the
// reconciler can compare without decoding expressions. NftSet replaces the
// table in one netlink transaction, so there is never a moment without the
// rule.

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
)

const (
	nftTable      = "weft"
	nftChain      = "postrouting"
	nftCommentPfx = "weft masquerade "
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

// NftGet implements Kernel.
func (k *NetlinkKernel) NftGet() (netip.Prefix, error) {
	c, err := k.nftConn()
	if err != nil {
		return netip.Prefix{}, err
	}
	t, err := k.nftFind(c)
	if err != nil || t == nil {
		return netip.Prefix{}, err
	}
	rules, err := c.GetRules(t, &nftables.Chain{Name: nftChain, Table: t})
	if err != nil {
		return netip.Prefix{}, nil // table without our chain: NftSet recreates it
	}
	for _, r := range rules {
		s, ok := userdata.GetString(r.UserData, userdata.TypeComment)
		if !ok || !strings.HasPrefix(s, nftCommentPfx) {
			continue
		}
		if p, err := netip.ParsePrefix(strings.TrimPrefix(s, nftCommentPfx)); err == nil {
			return p, nil
		}
	}
	return netip.Prefix{}, nil
}

// NftSet implements Kernel.
func (k *NetlinkKernel) NftSet(rng netip.Prefix) error {
	if !rng.Addr().Is4() {
		return fmt.Errorf("nft masquerade %v: IPv4 range required", rng)
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
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nft set table %s: %w", nftTable, err)
	}
	return nil
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
