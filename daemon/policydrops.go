package daemon

// Dropped packets. Every isolated pod's chain ends in a rate-limited
// NFLOG of what it drops (policy.LogPrefix: "weft-policy deny <direction>
// <namespace>/<pod>", at most policy.DefaultConfig().LogRate a second per
// chain), and policyLogLoop reads the group (internal/nflog). Each logged
// packet is put into words with the model in force: which pods (or nodes)
// the addresses are, and which policies isolate the pod in that direction
// without a rule that allows it (a drop is always that: the default deny
// of those policies). The last dropLogSize kinds of drop (pod, direction,
// source, destination, port, protocol) are kept with a count, newest
// first; the counters per pod and direction feed
// weft_policy_drops_total, with at most maxDropCounters label sets (a
// node's pods, two directions: far fewer in practice).

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/weftmesh/weft/api/client"
	"github.com/weftmesh/weft/policy"
)

const (
	dropLogSize     = 256  // kinds of drop kept
	maxDropCounters = 2048 // label sets of weft_policy_drops_total; past it, pod "_other"
)

// dropKey is one kind of drop.
type dropKey struct {
	Direction string // ingress, egress
	Pod       string // namespace/name, from the log prefix
	Src, Dst  netip.Addr
	Port      uint16
	Proto     policy.Protocol
}

// parseDrop reads a logged packet: the prefix of a pod chain and the
// packet from its IPv4 header. ok is false for anything else.
func parseDrop(prefix string, pkt []byte) (k dropKey, ok bool) {
	var found bool
	if k.Direction, k.Pod, found = policy.ParseLogPrefix(prefix); !found {
		return k, false
	}
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		return k, false
	}
	ihl := int(pkt[0]&0x0f) * 4
	if ihl < 20 || len(pkt) < ihl {
		return k, false
	}
	k.Proto = policy.Protocol(pkt[9])
	k.Src = netip.AddrFrom4([4]byte(pkt[12:16]))
	k.Dst = netip.AddrFrom4([4]byte(pkt[16:20]))
	fragment := binary.BigEndian.Uint16(pkt[6:8])&0x1fff != 0
	switch k.Proto {
	case policy.TCP, policy.UDP, policy.SCTP:
		if !fragment && len(pkt) >= ihl+4 {
			k.Port = binary.BigEndian.Uint16(pkt[ihl+2:])
		}
	}
	return k, true
}

// dropEntry is one kind of drop and its count.
type dropEntry struct {
	key   dropKey
	last  time.Time
	count int
	drop  client.PolicyDrop // described when first seen
}

// dropLog keeps the last kinds of drop and the counters. Safe for
// concurrent use.
type dropLog struct {
	size int

	mu       sync.Mutex   // guards following
	entries  []*dropEntry // oldest first
	counters map[client.PolicyDropCount]uint64
	total    uint64
}

func newDropLog(size int) *dropLog {
	return &dropLog{size: size, counters: map[client.PolicyDropCount]uint64{}}
}

// Record counts one logged packet, described with m (nil: not yet
// known). It returns false for a packet that is not a pod chain's drop.
func (l *dropLog) Record(m *policy.Model, prefix string, pkt []byte, at time.Time) bool {
	k, ok := parseDrop(prefix, pkt)
	if !ok {
		return false
	}
	if at.IsZero() {
		at = time.Now()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total++
	ns, pod, _ := strings.Cut(k.Pod, "/")
	ck := client.PolicyDropCount{Direction: k.Direction, Namespace: ns, Pod: pod}
	if _, ok := l.counters[ck]; !ok && len(l.counters) >= maxDropCounters {
		ck.Namespace, ck.Pod = "", "_other"
	}
	l.counters[ck]++
	for i, e := range l.entries {
		if e.key == k {
			e.count++
			e.last = at
			l.entries = append(append(l.entries[:i], l.entries[i+1:]...), e) // newest last
			return true
		}
	}
	e := &dropEntry{key: k, last: at, count: 1, drop: describeDrop(m, k)}
	if len(l.entries) >= l.size {
		l.entries = l.entries[1:]
	}
	l.entries = append(l.entries, e)
	return true
}

// describeDrop puts k in words with model m.
func describeDrop(m *policy.Model, k dropKey) client.PolicyDrop {
	d := client.PolicyDrop{Direction: k.Direction, Pod: k.Pod, Src: k.Src.String(), Dst: k.Dst.String(),
		SrcName: k.Src.String(), DstName: k.Dst.String(), Port: int(k.Port), Protocol: k.Proto.String(),
		Reason: "default deny"}
	if m == nil {
		return d
	}
	src, dst := m.Endpoint(k.Src), m.Endpoint(k.Dst)
	d.SrcName, d.DstName = src.String(), dst.String()
	v := policy.Evaluate(m, src, dst, k.Port, k.Proto)
	side := v.Ingress
	if k.Direction == "egress" {
		side = v.Egress
	}
	if side.Reason == policy.DefaultDeny {
		d.Policies = slices.Clone(side.Selected)
		d.Reason = "default deny: selected by " + strings.Join(side.Selected, ", ") + ", no rule allows"
	} else {
		// The model changed since the kernel dropped it.
		d.Reason = "default deny (of the program in force then; now " + side.String() + ")"
	}
	return d
}

// List returns the kinds of drop, newest first.
func (l *dropLog) List() []client.PolicyDrop {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]client.PolicyDrop, 0, len(l.entries))
	for i := len(l.entries) - 1; i >= 0; i-- {
		e := l.entries[i]
		d := e.drop
		d.Time, d.Count = e.last.UTC().Format(time.RFC3339Nano), e.count
		d.Policies = slices.Clone(d.Policies)
		out = append(out, d)
	}
	return out
}

// Counts returns the counters per pod and direction.
func (l *dropLog) Counts() []client.PolicyDropCount {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]client.PolicyDropCount, 0, len(l.counters))
	for k, n := range l.counters {
		k.Count = n
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b client.PolicyDropCount) int {
		return strings.Compare(a.Namespace+"/"+a.Pod+" "+a.Direction, b.Namespace+"/"+b.Pod+" "+b.Direction)
	})
	return out
}

// Total returns the drops logged since start.
func (l *dropLog) Total() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}
