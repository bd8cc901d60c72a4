package dns

import (
	"bytes"
	"testing"

	miekg "github.com/miekg/dns"
	"github.com/weftmesh/weft/dns/dnstest"
)

// FuzzMerge feeds gossip messages (untrusted bytes) to the decoder and to
// Merge: no panic, and whatever decodes re-encodes to the same records.
func FuzzMerge(f *testing.F) {
	recs := []record{
		{Owner: other, Name: "web.weft.local.", Addr: mustAddr("10.32.0.7"), Container: "abc", Version: 42},
		{Owner: other, Name: "db.weft.local.", Addr: mustAddr("fd00::1"), Version: 1 << 60, Deleted: true},
	}
	f.Add(encodeRecords(kindDelta, recs))
	f.Add(encodeRecords(kindFull, recs))
	f.Add(encodeRecords(kindFull, nil))
	f.Add([]byte{wireVersion, kindFull, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, msg []byte) {
		kind, got, err := decodeRecords(msg)
		if err == nil {
			kind2, again, err := decodeRecords(encodeRecords(kind, got))
			if err != nil || kind2 != kind || len(again) != len(got) {
				t.Fatalf("re-decoding %x: kind %d, %d records, %v", msg, kind2, len(again), err)
			}
			for i := range got {
				if got[i] != again[i] {
					t.Fatalf("record %d changed by re-encoding: %+v vs %+v", i, got[i], again[i])
				}
			}
		}
		s, err := New(testConfig(self), nopTransport{})
		if err != nil {
			t.Fatal(err)
		}
		before := s.FullState()
		if err := s.Merge(other, msg); err != nil && !bytes.Equal(before, s.FullState()) {
			t.Fatalf("rejected message changed the state")
		}
		_ = s.Entries()
		_ = s.zone()
	})
}

// FuzzHandle feeds raw query bytes through the fast path and through
// Msg.Unpack and ServeDNS: neither may panic, and a fast answer must be a
// well-formed response to the query.
func FuzzHandle(f *testing.F) {
	s, err := New(testConfig(self), nopTransport{})
	if err != nil {
		f.Fatal(err)
	}
	// Only local answers: forwarding would need a network.
	for _, n := range []string{"web", "db", "pod.ns"} {
		if err := s.Add(n, mustAddr("10.32.0.7"), ""); err != nil {
			f.Fatal(err)
		}
	}
	for _, q := range []*miekg.Msg{
		query("web.weft.local.", miekg.TypeA, false),
		query("WEB.weft.local.", miekg.TypeAAAA, true),
		query("web.", miekg.TypeA, false),
		query("nope.weft.local.", miekg.TypeMX, true),
		query("7.0.32.10.in-addr.arpa.", miekg.TypePTR, false),
		query("weft.local.", miekg.TypeSOA, false),
	} {
		raw, _ := q.Pack()
		f.Add(raw)
	}
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0, 1, 0, 1})
	out := make([]byte, 0, 65535)
	f.Fuzz(func(t *testing.T, raw []byte) {
		resp, outcome := s.zone().answerFast(raw, out)
		if outcome == fastAnswer || outcome == fastNXDomain {
			m := new(miekg.Msg)
			if err := m.Unpack(resp); err != nil {
				t.Fatalf("fast answer to %x does not parse: %v", raw, err)
			}
			if !m.Response || m.Id != uint16(raw[0])<<8|uint16(raw[1]) || len(m.Question) != 1 {
				t.Fatalf("fast answer to %x: bad header %+v", raw, m.MsgHdr)
			}
		}
		req := new(miekg.Msg)
		if err := req.Unpack(raw); err != nil {
			return
		}
		if len(req.Question) == 1 {
			if _, local := s.zone().lookup(req.Question[0].Name, req.Question[0].Qtype); !local {
				return // would be forwarded
			}
		}
		w := dnstest.NewRecorder("udp")
		s.ServeDNS(w, req)
		if w.Msg != nil {
			if _, err := w.Msg.Pack(); err != nil {
				t.Fatalf("answer to %v does not pack: %v", req, err)
			}
		}
	})
}
