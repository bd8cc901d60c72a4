package dns

import (
	"net/netip"
	"testing"

	miekg "github.com/miekg/dns"
	"github.com/weftmesh/weft/dns/dnstest"
	"github.com/weftmesh/weft/peer"
)

const (
	self  peer.ID = 0x1111
	other peer.ID = 0x2222
	gone  peer.ID = 0x3333
)

// zoneServer returns a server holding a small zone: web (two addresses,
// one from another peer), db (IPv4 and IPv6), pod.ns, and a record of a
// dead peer; it forwards to a test upstream.
func zoneServer(t *testing.T) *Server {
	t.Helper()
	up := startUpstream(t, exampleUpstream)
	cfg := testConfig(self)
	cfg.Upstreams = []string{up.addr.String()}
	s := newServer(t, cfg, nil)
	for _, r := range []struct{ name, addr string }{
		{"web", "10.32.0.7"}, {"db", "10.32.0.9"}, {"db.weft.local", "fd00::9"}, {"pod.ns", "10.32.1.1"},
	} {
		if err := s.Add(r.name, mustAddr(r.addr), "c-"+r.name); err != nil {
			t.Fatalf("Add(%q): %v", r.name, err)
		}
	}
	remote := []record{
		{Owner: other, Name: "web.weft.local.", Addr: mustAddr("10.32.0.8"), Version: 1},
		{Owner: gone, Name: "old.weft.local.", Addr: mustAddr("10.32.2.2"), Version: 1},
	}
	if err := s.Merge(other, encodeRecords(kindFull, remote)); err != nil {
		t.Fatalf("Merge: %v", err)
	}
	s.SetPeers([]peer.Info{{ID: self, State: peer.Alive}, {ID: other, State: peer.Alive}, {ID: gone, State: peer.Dead}})
	return s
}

type answerCase struct {
	name  string
	qname string
	qtype uint16
	edns  bool
	fast  bool // the UDP fast path must answer it (not decline)
	want  summary
}

func answerCases() []answerCase {
	soa := []string{"weft.local. SOA"}
	a := func(owner string, addrs ...string) []string {
		var out []string
		for _, x := range addrs {
			rr, _ := miekg.NewRR(owner + " 5 IN A " + x)
			out = append(out, rr.String())
		}
		return out
	}
	return []answerCase{
		{name: "A all addresses", qname: "web.weft.local.", qtype: miekg.TypeA, fast: true,
			want: summary{Rcode: "NOERROR", AA: true, Answer: a("web.weft.local.", "10.32.0.7", "10.32.0.8")}},
		{name: "case insensitive, case kept", qname: "WEB.Weft.LOCAL.", qtype: miekg.TypeA, fast: true,
			want: summary{Rcode: "NOERROR", AA: true, Answer: a("WEB.Weft.LOCAL.", "10.32.0.7", "10.32.0.8")}},
		{name: "single label completed", qname: "web.", qtype: miekg.TypeA, fast: true,
			want: summary{Rcode: "NOERROR", AA: true, Answer: a("web.", "10.32.0.7", "10.32.0.8")}},
		{name: "with EDNS", qname: "db.weft.local.", qtype: miekg.TypeA, edns: true, fast: true,
			want: summary{Rcode: "NOERROR", AA: true, EDNS: true, Answer: a("db.weft.local.", "10.32.0.9")}},
		{name: "AAAA of v4-only name is empty", qname: "web.weft.local.", qtype: miekg.TypeAAAA, fast: true,
			want: summary{Rcode: "NOERROR", AA: true, Ns: soa}},
		{name: "AAAA", qname: "db.weft.local.", qtype: miekg.TypeAAAA, fast: true,
			want: summary{Rcode: "NOERROR", AA: true, Answer: []string{"db.weft.local.\t5\tIN\tAAAA\tfd00::9"}}},
		{name: "MX of known name is empty", qname: "web.weft.local.", qtype: miekg.TypeMX, fast: true,
			want: summary{Rcode: "NOERROR", AA: true, Ns: soa}},
		{name: "unknown name NXDOMAIN", qname: "nope.weft.local.", qtype: miekg.TypeA, fast: true,
			want: summary{Rcode: "NXDOMAIN", AA: true, Ns: soa}},
		{name: "empty non-terminal", qname: "ns.weft.local.", qtype: miekg.TypeA, fast: true,
			want: summary{Rcode: "NOERROR", AA: true, Ns: soa}},
		{name: "two labels below domain", qname: "pod.ns.weft.local.", qtype: miekg.TypeA, fast: true,
			want: summary{Rcode: "NOERROR", AA: true, Answer: a("pod.ns.weft.local.", "10.32.1.1")}},
		{name: "dead peer's record hidden", qname: "old.weft.local.", qtype: miekg.TypeA, fast: true,
			want: summary{Rcode: "NXDOMAIN", AA: true, Ns: soa}},
		{name: "apex SOA", qname: "weft.local.", qtype: miekg.TypeSOA, fast: true,
			want: summary{Rcode: "NOERROR", AA: true, Answer: []string{
				"weft.local.\t5\tIN\tSOA\tns.weft.local. hostmaster.weft.local. 1 3600 600 86400 5"}}},
		{name: "PTR of a record", qname: "7.0.32.10.in-addr.arpa.", qtype: miekg.TypePTR,
			want: summary{Rcode: "NOERROR", AA: true, Answer: []string{"7.0.32.10.in-addr.arpa.\t5\tIN\tPTR\tweb.weft.local."}}},
		{name: "PTR of a record of another peer", qname: "8.0.32.10.IN-ADDR.ARPA.", qtype: miekg.TypePTR,
			want: summary{Rcode: "NOERROR", AA: true, Answer: []string{"8.0.32.10.IN-ADDR.ARPA.\t5\tIN\tPTR\tweb.weft.local."}}},
		{name: "PTR ip6.arpa", qname: "9.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.", qtype: miekg.TypePTR,
			want: summary{Rcode: "NOERROR", AA: true, Answer: []string{
				"9.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.\t5\tIN\tPTR\tdb.weft.local."}}},
		{name: "PTR unknown in range", qname: "99.0.32.10.in-addr.arpa.", qtype: miekg.TypePTR,
			want: summary{Rcode: "NXDOMAIN", AA: true}},
		{name: "PTR outside range forwarded", qname: "1.2.0.192.in-addr.arpa.", qtype: miekg.TypePTR,
			want: summary{Rcode: "NXDOMAIN"}},
		{name: "outside domain forwarded", qname: "example.com.", qtype: miekg.TypeA,
			want: summary{Rcode: "NOERROR", Answer: []string{"example.com.\t60\tIN\tA\t192.0.2.1"}}},
		{name: "unknown single label forwarded", qname: "intranet.", qtype: miekg.TypeA,
			want: summary{Rcode: "NOERROR", Answer: []string{"intranet.\t60\tIN\tA\t192.0.2.1"}}},
	}
}

func query(qname string, qtype uint16, edns bool) *miekg.Msg {
	q := new(miekg.Msg)
	q.SetQuestion(qname, qtype)
	q.RecursionDesired = true
	if edns {
		q.SetEdns0(1232, false)
	}
	return q
}

func TestServeDNS(t *testing.T) {
	s := zoneServer(t)
	for _, tc := range answerCases() {
		for _, netw := range []string{"udp", "tcp"} {
			t.Run(tc.name+"/"+netw, func(t *testing.T) {
				w := dnstest.NewRecorder(netw)
				q := query(tc.qname, tc.qtype, tc.edns)
				s.ServeDNS(w, q)
				if w.Msg == nil {
					t.Fatalf("ServeDNS(%s %s) wrote nothing", tc.qname, miekg.TypeToString[tc.qtype])
				}
				if w.Msg.Id != q.Id || !w.Msg.Response || w.Msg.Question[0] != q.Question[0] {
					t.Errorf("ServeDNS(%s): header/question = %v; want id %d and question echoed", tc.qname, w.Msg, q.Id)
				}
				if d := diff(tc.want, summarize(w.Msg)); d != "" {
					t.Errorf("ServeDNS(%s %s) (-want +got):\n%s", tc.qname, miekg.TypeToString[tc.qtype], d)
				}
			})
		}
	}
}

// TestFastPathMatchesServeDNS checks that the UDP fast path gives the same
// answers as the slow path for everything it accepts.
func TestFastPathMatchesServeDNS(t *testing.T) {
	s := zoneServer(t)
	out := make([]byte, 0, 4096)
	for _, tc := range answerCases() {
		t.Run(tc.name, func(t *testing.T) {
			q := query(tc.qname, tc.qtype, tc.edns)
			raw, err := q.Pack()
			if err != nil {
				t.Fatal(err)
			}
			resp, outcome := s.zone().answerFast(raw, out)
			if outcome == fastSlow || outcome == fastDrop {
				if tc.fast {
					t.Fatalf("answerFast(%s) declined; want it answered", tc.qname)
				}
				return
			}
			if !tc.fast {
				t.Fatalf("answerFast(%s) answered; want it declined", tc.qname)
			}
			m := new(miekg.Msg)
			if err := m.Unpack(resp); err != nil {
				t.Fatalf("answerFast(%s) = unparsable %x: %v", tc.qname, resp, err)
			}
			if m.Id != q.Id || !m.Response || !m.RecursionDesired || !m.RecursionAvailable || m.Question[0] != q.Question[0] {
				t.Errorf("answerFast(%s) header = %+v", tc.qname, m.MsgHdr)
			}
			if d := diff(tc.want, summarize(m)); d != "" {
				t.Errorf("answerFast(%s %s) (-want +got):\n%s", tc.qname, miekg.TypeToString[tc.qtype], d)
			}
		})
	}
}

func TestServeDNSOddQueries(t *testing.T) {
	s := zoneServer(t)
	badVers := query("web.weft.local.", miekg.TypeA, true)
	badVers.IsEdns0().SetVersion(1)
	notify := query("web.weft.local.", miekg.TypeSOA, false)
	notify.Opcode = miekg.OpcodeNotify
	twoQ := query("web.weft.local.", miekg.TypeA, false)
	twoQ.Question = append(twoQ.Question, twoQ.Question[0])
	noQ := query("web.weft.local.", miekg.TypeA, false)
	noQ.Question = nil
	resp := query("web.weft.local.", miekg.TypeA, false)
	resp.Response = true
	for _, tc := range []struct {
		name      string
		q         *miekg.Msg
		wantRcode int // -1: no answer at all
	}{
		{"EDNS version 1", badVers, miekg.RcodeBadVers},
		{"NOTIFY opcode", notify, miekg.RcodeNotImplemented},
		{"two questions", twoQ, miekg.RcodeFormatError},
		{"no question", noQ, miekg.RcodeFormatError},
		{"a response", resp, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := dnstest.NewRecorder("udp")
			s.ServeDNS(w, tc.q)
			switch {
			case tc.wantRcode < 0 && w.Msg != nil:
				t.Errorf("ServeDNS answered %v; want silence", w.Msg)
			case tc.wantRcode >= 0 && w.Msg == nil:
				t.Errorf("ServeDNS wrote nothing; want rcode %s", miekg.RcodeToString[tc.wantRcode])
			case tc.wantRcode >= 0 && w.Msg.Rcode != tc.wantRcode:
				t.Errorf("ServeDNS rcode = %s; want %s", miekg.RcodeToString[w.Msg.Rcode], miekg.RcodeToString[tc.wantRcode])
			}
			if raw, err := tc.q.Pack(); err == nil {
				if _, outcome := s.zone().answerFast(raw, nil); outcome == fastAnswer || outcome == fastNXDomain {
					t.Errorf("answerFast answered an odd query")
				}
			}
		})
	}
}

// TestShuffle checks that A answers come in more than one order.
func TestShuffle(t *testing.T) {
	s := newServer(t, testConfig(self), nil)
	for i := 1; i <= 8; i++ {
		if err := s.Add("many", netip.AddrFrom4([4]byte{10, 32, 0, byte(i)}), ""); err != nil {
			t.Fatal(err)
		}
	}
	raw, _ := query("many.weft.local.", miekg.TypeA, false).Pack()
	orders := map[string]bool{}
	for i := 0; i < 50; i++ {
		resp, _ := s.zone().answerFast(raw, nil)
		m := new(miekg.Msg)
		if err := m.Unpack(resp); err != nil {
			t.Fatal(err)
		}
		if len(m.Answer) != 8 {
			t.Fatalf("fast answer has %d records; want 8", len(m.Answer))
		}
		orders[m.Answer[0].String()+m.Answer[7].String()] = true
		w := dnstest.NewRecorder("tcp")
		s.ServeDNS(w, query("many.weft.local.", miekg.TypeA, false))
		orders["slow"+w.Msg.Answer[0].String()+w.Msg.Answer[7].String()] = true
	}
	if len(orders) < 10 {
		t.Errorf("50 fast and 50 slow answers came in %d orders; want shuffled", len(orders))
	}
}

// TestTruncation: an answer too large for the client's UDP size comes back
// truncated (the fast path declines it, the slow path sets TC).
func TestTruncation(t *testing.T) {
	s := newServer(t, testConfig(self), nil)
	for i := 1; i <= 40; i++ {
		if err := s.Add("big", netip.AddrFrom4([4]byte{10, 32, 1, byte(i)}), ""); err != nil {
			t.Fatal(err)
		}
	}
	q := query("big.weft.local.", miekg.TypeA, false)
	raw, _ := q.Pack()
	if _, outcome := s.zone().answerFast(raw, nil); outcome != fastSlow {
		t.Fatalf("answerFast of a 40-record answer without EDNS = %v; want declined", outcome)
	}
	w := dnstest.NewRecorder("udp")
	s.ServeDNS(w, q)
	if !w.Msg.Truncated || w.Msg.Len() > 512 {
		t.Errorf("UDP answer: truncated=%v len=%d; want TC and <= 512 bytes", w.Msg.Truncated, w.Msg.Len())
	}
	w = dnstest.NewRecorder("tcp")
	s.ServeDNS(w, q)
	if w.Msg.Truncated || len(w.Msg.Answer) != 40 {
		t.Errorf("TCP answer: truncated=%v answers=%d; want all 40", w.Msg.Truncated, len(w.Msg.Answer))
	}
	raw, _ = query("big.weft.local.", miekg.TypeA, true).Pack()
	if resp, outcome := s.zone().answerFast(raw, nil); outcome != fastAnswer || len(resp) > 1232 {
		t.Errorf("answerFast with EDNS 1232 = %v, %d bytes; want answered", outcome, len(resp))
	}
}
