package nft

// Running operations: Ops into google/nftables messages of one batch, IR
// rules into expressions.

import (
	"encoding/binary"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/weftmesh/weft/policy"
)

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
		case policy.MatchSpoofed:
			// iifname "<prefix>*": compare the name's first bytes only.
			es = append(es,
				&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(m.Prefix)},
				// fib saddr . iif oif missing: no route back out of iif.
				&expr.Fib{Register: 1, ResultOIF: true, FlagSADDR: true, FlagIIF: true},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: make([]byte, 4)})
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
