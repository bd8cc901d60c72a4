package nft

// The kernel side, through google/nftables: reading a table back into a
// State, and running Ops as one netlink batch (one nftables
// transaction: all or nothing, no packet sees a half state).
//
// The IR maps onto expressions as nft would emit them (nft --debug=netlink
// shows the same): ip saddr/daddr are loads at network header offset 12
// and 16, th dport a load at transport header offset 2, a concatenation
// puts its second field in register 9, a port range is two comparisons of
// big-endian bytes, ct state a bitwise and. An interval set holds a range
// as a start element and an end element one past it (none when the range
// reaches 255.255.255.255). Each rule carries its key (RuleKey) as its
// comment, which is how Read knows the rules again without decoding
// expressions.
//
// A full program of a thousand pods and policies is a batch of tens of
// thousands of messages, each acknowledged; the kernel queues all the
// acknowledgements before the first is read. The socket's buffers are
// forced (SO_SNDBUFFORCE, SO_RCVBUFFORCE, which need CAP_NET_ADMIN like
// everything here) to fit the batch, as nft itself does.

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftmesh/weft/policy"
)

// NetlinkConn is the real Conn. Close releases its namespace handle.
type NetlinkConn struct {
	ns *os.File // the target network namespace; nil = the caller's
}

var _ Conn = (*NetlinkConn)(nil)

// NewNetlinkConn returns a Conn for the network namespace at netnsPath
// ("" = the current one: the host's, for the daemon).
func NewNetlinkConn(netnsPath string) (*NetlinkConn, error) {
	k := &NetlinkConn{}
	if netnsPath != "" {
		f, err := os.Open(netnsPath)
		if err != nil {
			return nil, fmt.Errorf("open netns %s: %w", netnsPath, err)
		}
		k.ns = f
	}
	return k, nil
}

// Close releases the namespace handle.
func (k *NetlinkConn) Close() error {
	if k.ns == nil {
		return nil
	}
	return k.ns.Close()
}

// conn opens a lasting nftables connection whose buffers fit n messages.
func (k *NetlinkConn) conn(n int) (*nftables.Conn, error) {
	buf := max(4<<20, n*2048)
	opts := []nftables.ConnOption{nftables.AsLasting(), nftables.WithSockOptions(func(c *netlink.Conn) error {
		return forceBuffers(c, buf)
	})}
	if k.ns != nil {
		opts = append(opts, nftables.WithNetNSFd(int(k.ns.Fd())))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables conn: %w", err)
	}
	return c, nil
}

// forceBuffers sets both socket buffers to n bytes, past the sysctl
// limits when allowed, else as far as they let.
func forceBuffers(c *netlink.Conn, n int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for _, o := range [][2]int{{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}, {unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}} {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[0], n) != nil {
				if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[1], n); e != nil && serr == nil {
					serr = e
				}
			}
		}
	}); err != nil {
		return err
	}
	return serr
}

func ipTable(name string) *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyIPv4, Name: name}
}

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

// elemsPerMessage keeps a set element message under netlink's 64 KiB
// attribute limit.
const elemsPerMessage = 512

// Exec implements Conn.
func (k *NetlinkConn) Exec(table string, ops []Op) error {
	c, err := k.conn(len(ops) + countElems(ops)/elemsPerMessage)
	if err != nil {
		return err
	}
	defer c.CloseLasting()
	t := ipTable(table)
	sets := map[string]*nftables.Set{}
	nextID := uint32(0)
	set := func(name string, kind policy.SetKind) *nftables.Set {
		if s, ok := sets[name]; ok {
			return s
		}
		s := newSet(t, name, kind)
		sets[name] = s
		return s
	}
	for _, op := range ops {
		switch op.Kind {
		case AddTable:
			c.AddTable(t)
		case DelTable:
			c.DelTable(t)
		case AddChain:
			c.AddChain(newChain(t, op.Chain, op.Hook))
		case FlushChain:
			c.FlushChain(&nftables.Chain{Table: t, Name: op.Chain})
		case DelChain:
			c.DelChain(&nftables.Chain{Table: t, Name: op.Chain})
		case AddRule:
			exprs, err := ruleExprs(op.Rule)
			if err != nil {
				return fmt.Errorf("%v: %w", op, err)
			}
			c.AddRule(&nftables.Rule{Table: t, Chain: &nftables.Chain{Table: t, Name: op.Chain}, Exprs: exprs,
				UserData: userdata.AppendString(nil, userdata.TypeComment, RuleKey(op.Rule))})
		case AddSet:
			s := newSet(t, op.Set, op.SetKind)
			s.Comment = op.Comment
			nextID++ // ours, not google/nftables' package counter (racy across Conns)
			s.ID = nextID
			if err := c.AddSet(s, nil); err != nil {
				return fmt.Errorf("%v: %w", op, err)
			}
			sets[op.Set] = s
		case DelSet:
			c.DelSet(&nftables.Set{Table: t, Name: op.Set})
		case AddElems, DelElems:
			s := set(op.Set, op.SetKind)
			kelems := encodeElems(op.SetKind, op.Elems)
			for len(kelems) > 0 {
				n := min(len(kelems), elemsPerMessage)
				chunk := kelems[:n]
				kelems = kelems[n:]
				var err error
				if op.Kind == AddElems {
					err = c.SetAddElements(s, chunk)
				} else {
					err = c.SetDeleteElements(s, chunk)
				}
				if err != nil {
					return fmt.Errorf("%v: %w", op, err)
				}
			}
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables transaction: %w", err)
	}
	return nil
}

func countElems(ops []Op) int {
	n := 0
	for _, o := range ops {
		n += len(o.Elems)
	}
	return n
}

func newChain(t *nftables.Table, name string, h policy.Hook) *nftables.Chain {
	ch := &nftables.Chain{Table: t, Name: name}
	if h == policy.HookNone {
		return ch
	}
	accept := nftables.ChainPolicyAccept
	ch.Type, ch.Priority, ch.Policy = nftables.ChainTypeFilter, nftables.ChainPriorityFilter, &accept
	ch.Hooknum = nftables.ChainHookForward
	if h == policy.HookInput {
		ch.Hooknum = nftables.ChainHookInput
	}
	return ch
}

func newSet(t *nftables.Table, name string, kind policy.SetKind) *nftables.Set {
	s := &nftables.Set{Table: t, Name: name, KeyType: nftables.TypeIPAddr}
	switch kind {
	case policy.RangeSet:
		s.Interval = true
	case policy.AddrPortSet:
		s.KeyType = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)
		s.Concatenation = true
	case policy.VerdictMap:
		s.IsMap, s.DataType = true, nftables.TypeVerdict
	}
	return s
}

func encodeElems(kind policy.SetKind, elems []policy.Elem) []nftables.SetElement {
	var out []nftables.SetElement
	for _, e := range elems {
		a := e.Addr.As4()
		switch kind {
		case policy.RangeSet:
			out = append(out, nftables.SetElement{Key: a[:]})
			if e.Last != lastAddr {
				end := e.Last.Next().As4()
				out = append(out, nftables.SetElement{Key: end[:], IntervalEnd: true})
			}
		case policy.AddrPortSet:
			key := make([]byte, 8) // each field padded to 4 bytes
			copy(key, a[:])
			binary.BigEndian.PutUint16(key[4:], e.Port)
			out = append(out, nftables.SetElement{Key: key})
		case policy.VerdictMap:
			out = append(out, nftables.SetElement{Key: a[:], VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: e.Chain}})
		default:
			out = append(out, nftables.SetElement{Key: a[:]})
		}
	}
	return out
}

// addrOffset is the offset of a field in the IPv4 header.
func addrOffset(f policy.Field) uint32 {
	if f == policy.Daddr {
		return 16
	}
	return 12
}

func loadAddr(f policy.Field, reg uint32) *expr.Payload {
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: addrOffset(f), Len: 4}
}

func loadDport(reg uint32) *expr.Payload {
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}
}

// ruleExprs translates an IR rule into expressions.
func ruleExprs(r policy.ChainRule) ([]expr.Any, error) {
	var es []expr.Any
	for _, m := range r.Match {
		switch m.Kind {
		case policy.MatchEstablished:
			es = append(es,
				&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
					Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: make([]byte, 4)},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)})
		case policy.MatchAddrIn:
			es = append(es, loadAddr(m.Field, 1), &expr.Lookup{SourceRegister: 1, SetName: m.Set})
		case policy.MatchAddrPortIn:
			es = append(es, loadAddr(policy.Daddr, 1), loadDport(9), &expr.Lookup{SourceRegister: 1, SetName: m.Set})
		case policy.MatchProto:
			es = append(es,
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{byte(m.Proto)}})
		case policy.MatchPorts:
			es = append(es, loadDport(1))
			if m.Lo == m.Hi {
				es = append(es, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(m.Lo)})
			} else {
				es = append(es,
					&expr.Cmp{Op: expr.CmpOpGte, Register: 1, Data: binaryutil.BigEndian.PutUint16(m.Lo)},
					&expr.Cmp{Op: expr.CmpOpLte, Register: 1, Data: binaryutil.BigEndian.PutUint16(m.Hi)})
			}
		default:
			return nil, fmt.Errorf("unknown match %d", m.Kind)
		}
	}
	if l := r.Log; l != nil {
		es = append(es,
			&expr.Limit{Type: expr.LimitTypePkts, Rate: uint64(l.Rate), Unit: expr.LimitTimeSecond, Burst: l.Burst},
			&expr.Log{Key: 1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_PREFIX, Group: l.Group, Data: []byte(l.Prefix)})
	}
	if r.Counter {
		es = append(es, &expr.Counter{})
	}
	switch a := r.Action; a.Kind {
	case policy.Continue:
	case policy.Accept:
		es = append(es, &expr.Verdict{Kind: expr.VerdictAccept})
	case policy.Drop:
		es = append(es, &expr.Verdict{Kind: expr.VerdictDrop})
	case policy.Return:
		es = append(es, &expr.Verdict{Kind: expr.VerdictReturn})
	case policy.Jump:
		es = append(es, &expr.Verdict{Kind: expr.VerdictJump, Chain: a.Chain})
	case policy.Dispatch:
		es = append(es, loadAddr(a.Field, 1), &expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true, SetName: a.Map})
	default:
		return nil, fmt.Errorf("unknown action %d", a.Kind)
	}
	return es, nil
}
