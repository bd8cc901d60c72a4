package nft

// Reading a table back: chains, rules (by their comments, in one dump),
// sets and their elements, into a State.

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftmesh/weft/policy"
)

// Read implements Conn.
func (k *NetlinkConn) Read(table string) (*State, error) {
	c, err := k.conn(0)
	if err != nil {
		return nil, err
	}
	defer c.CloseLasting()
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	if !slices.ContainsFunc(ts, func(t *nftables.Table) bool { return t.Name == table }) {
		return nil, nil
	}
	t := ipTable(table)
	s := NewState()
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, fmt.Errorf("list chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Table.Name != table {
			continue
		}
		cs := &ChainState{}
		if ch.Hooknum != nil {
			switch *ch.Hooknum {
			case *nftables.ChainHookForward:
				cs.Hook = policy.HookForward
			case *nftables.ChainHookInput:
				cs.Hook = policy.HookInput
			default:
				cs.Hook = 255 // someone else's: never what a program wants
			}
		}
		s.Chains[ch.Name] = cs
	}
	rules, err := k.dumpRules(table)
	if err != nil {
		return nil, fmt.Errorf("list rules: %w", err)
	}
	for _, r := range rules {
		cs, ok := s.Chains[r.chain]
		if !ok {
			continue
		}
		cs.Rules = append(cs.Rules, r.key) // "" for a rule that is not ours: the chain differs
	}
	sets, err := c.GetSets(t)
	if err != nil {
		return nil, fmt.Errorf("list sets: %w", err)
	}
	for _, set := range sets {
		kind := setKind(set)
		elems, err := c.GetSetElements(set)
		if err != nil {
			return nil, fmt.Errorf("list set %s: %w", set.Name, err)
		}
		es := decodeElems(kind, elems)
		slices.SortFunc(es, CompareElem)
		s.Sets[set.Name] = &SetState{Kind: kind, Elems: slices.Compact(es)}
	}
	return s, nil
}

// dumpedRule is a rule as Read needs it: its chain and its key.
type dumpedRule struct{ chain, key string }

// dumpRules lists the rules of every chain of table in one dump, which
// google/nftables cannot ask for (it always names a chain): a
// NFT_MSG_GETRULE dump naming only the table.
func (k *NetlinkConn) dumpRules(table string) ([]dumpedRule, error) {
	cfg := &netlink.Config{}
	if k.ns != nil {
		cfg.NetNS = int(k.ns.Fd())
	}
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if err := forceBuffers(c, 4<<20); err != nil {
		return nil, err
	}
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{{Type: unix.NFTA_RULE_TABLE, Data: []byte(table + "\x00")}})
	if err != nil {
		return nil, err
	}
	msgs, err := c.Execute(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETRULE),
			Flags: netlink.Request | netlink.Dump,
		},
		// struct nfgenmsg: family, version, resource id.
		Data: append([]byte{unix.NFPROTO_IPV4, unix.NFNETLINK_V0, 0, 0}, attrs...),
	})
	if err != nil {
		return nil, err
	}
	var out []dumpedRule
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return nil, err
		}
		var r dumpedRule
		for ad.Next() {
			switch ad.Type() {
			case unix.NFTA_RULE_CHAIN:
				r.chain = ad.String()
			case unix.NFTA_RULE_USERDATA:
				r.key, _ = userdata.GetString(ad.Bytes(), userdata.TypeComment)
			}
		}
		if err := ad.Err(); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func setKind(s *nftables.Set) policy.SetKind {
	switch {
	case s.IsMap:
		return policy.VerdictMap
	case s.Interval:
		return policy.RangeSet
	case s.KeyType.Bytes == 8:
		return policy.AddrPortSet
	}
	return policy.AddrSet
}

func addr4(b []byte) netip.Addr {
	if len(b) < 4 {
		return netip.Addr{}
	}
	return netip.AddrFrom4([4]byte(b[:4]))
}

var lastAddr = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// decodeElems turns kernel elements back into IR elements.
func decodeElems(kind policy.SetKind, elems []nftables.SetElement) []policy.Elem {
	var out []policy.Elem
	switch kind {
	case policy.RangeSet:
		// By key; at one key an end (of the range before) comes before a
		// start (of the adjacent range after).
		slices.SortFunc(elems, func(a, b nftables.SetElement) int {
			if c := addr4(a.Key).Compare(addr4(b.Key)); c != 0 {
				return c
			}
			switch {
			case a.IntervalEnd == b.IntervalEnd:
				return 0
			case a.IntervalEnd:
				return -1
			}
			return 1
		})
		for i, e := range elems {
			if e.IntervalEnd {
				continue // an end, or nft's leading 0.0.0.0 end
			}
			last := lastAddr
			if i+1 < len(elems) && elems[i+1].IntervalEnd {
				last = addr4(elems[i+1].Key).Prev()
			}
			out = append(out, policy.Elem{Addr: addr4(e.Key), Last: last})
		}
	case policy.AddrPortSet:
		for _, e := range elems {
			if len(e.Key) >= 6 {
				out = append(out, policy.Elem{Addr: addr4(e.Key), Port: binary.BigEndian.Uint16(e.Key[4:6])})
			}
		}
	case policy.VerdictMap:
		for _, e := range elems {
			out = append(out, policy.Elem{Addr: addr4(e.Key), Chain: verdictChain(e.Val)})
		}
	default:
		for _, e := range elems {
			out = append(out, policy.Elem{Addr: addr4(e.Key)})
		}
	}
	return out
}

// verdictChain finds the chain of a jump in a verdict element's data
// (nested NFTA_VERDICT_CODE, NFTA_VERDICT_CHAIN).
func verdictChain(b []byte) string {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return ""
	}
	for ad.Next() {
		if ad.Type() == unix.NFTA_VERDICT_CHAIN {
			return ad.String()
		}
	}
	return ""
}
