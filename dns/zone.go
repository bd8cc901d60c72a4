package dns

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"strings"

	miekg "github.com/miekg/dns"
)

// A zone is an immutable snapshot of the visible records, with the answers
// precomputed in wire format so that the UDP fast path only copies bytes:
// an A answer is 16 bytes per address whose owner name is a compression
// pointer to the question (offset 12), so one packed set serves every
// spelling of the name (case, single label) and only the order of the
// fixed-size records is shuffled per query. The Server rebuilds the
// snapshot lazily, at the first query after a change.

const (
	ptrToQuestion = 0xC00C
	rrA           = 16 // pointer 2, type 2, class 2, ttl 4, rdlength 2, rdata 4
	rrAAAA        = 28
)

type zone struct {
	domain     string // lowercase FQDN
	domainWire []byte // its lowercase wire form
	ttl        uint32
	rng        netip.Prefix
	byWire     map[string]*nameRecords // key: lowercase wire-form FQDN
	byName     map[string]*nameRecords // key: lowercase FQDN
	reverse    map[netip.Addr][]string // address -> names, sorted
	soa        *miekg.SOA
	soaAuth    []byte // SOA RR with the domain spelled out (authority section)
	soaAnswer  []byte // SOA RR whose owner points to the question (apex SOA queries)
}

// nameRecords is what one name has: its addresses, packed and as values.
// An empty one is an empty non-terminal or the apex: NODATA, not NXDOMAIN.
type nameRecords struct {
	fqdn string
	v4   []netip.Addr
	v6   []netip.Addr
	a    []byte // packed A records, rrA bytes each
	aaaa []byte // packed AAAA records, rrAAAA bytes each
	apex bool
}

func newZone(domain string, ttl uint32, rng netip.Prefix, visible []record) *zone {
	z := &zone{
		domain:     domain,
		domainWire: wireName(domain),
		ttl:        ttl,
		rng:        rng,
		byWire:     make(map[string]*nameRecords),
		byName:     make(map[string]*nameRecords),
		reverse:    make(map[netip.Addr][]string),
	}
	z.soa = &miekg.SOA{
		Hdr:     miekg.RR_Header{Name: domain, Rrtype: miekg.TypeSOA, Class: miekg.ClassINET, Ttl: ttl},
		Ns:      "ns." + domain,
		Mbox:    "hostmaster." + domain,
		Serial:  1,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  ttl,
	}
	z.soaAuth = packRR(z.soa)
	z.soaAnswer = append([]byte{ptrToQuestion >> 8, ptrToQuestion & 0xff}, z.soaAuth[len(z.domainWire):]...)
	z.add(domain).apex = true
	for _, r := range visible {
		if !strings.HasSuffix(r.Name, "."+domain) {
			continue // another peer's domain: not ours to answer
		}
		nr := z.add(r.Name)
		if r.Addr.Is4() {
			nr.v4 = append(nr.v4, r.Addr)
		} else {
			nr.v6 = append(nr.v6, r.Addr)
		}
		z.reverse[r.Addr] = append(z.reverse[r.Addr], r.Name)
		for _, p := range parentNames(r.Name, domain) {
			z.add(p)
		}
	}
	for _, nr := range z.byName {
		slices.SortFunc(nr.v4, netip.Addr.Compare)
		nr.v4 = slices.Compact(nr.v4)
		slices.SortFunc(nr.v6, netip.Addr.Compare)
		nr.v6 = slices.Compact(nr.v6)
		for _, a := range nr.v4 {
			nr.a = appendAddrRR(nr.a, a, ttl)
		}
		for _, a := range nr.v6 {
			nr.aaaa = appendAddrRR(nr.aaaa, a, ttl)
		}
	}
	for a, names := range z.reverse {
		slices.Sort(names)
		z.reverse[a] = slices.Compact(names)
	}
	return z
}

func (z *zone) add(fqdn string) *nameRecords {
	if nr, ok := z.byName[fqdn]; ok {
		return nr
	}
	nr := &nameRecords{fqdn: fqdn}
	z.byName[fqdn] = nr
	z.byWire[string(wireName(fqdn))] = nr
	return nr
}

// appendAddrRR appends an A or AAAA record owned by the question's name.
func appendAddrRR(b []byte, a netip.Addr, ttl uint32) []byte {
	typ, raw := miekg.TypeA, a.AsSlice()
	if a.Is6() {
		typ = miekg.TypeAAAA
	}
	b = binary.BigEndian.AppendUint16(b, ptrToQuestion)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint16(b, miekg.ClassINET)
	b = binary.BigEndian.AppendUint32(b, ttl)
	b = binary.BigEndian.AppendUint16(b, uint16(len(raw)))
	return append(b, raw...)
}

// packRR packs one record without name compression.
func packRR(rr miekg.RR) []byte {
	b := make([]byte, miekg.Len(rr)+16)
	n, err := miekg.PackRR(rr, b, 0, nil, false)
	if err != nil {
		panic("dns: packing a record built from validated names: " + err.Error())
	}
	return b[:n]
}

// localAnswer is the outcome of answering from the zone.
type localAnswer struct {
	rcode  int
	answer []miekg.RR
	ns     []miekg.RR
}

// lookup answers a question from the zone (the slow path, used over TCP
// and for everything the fast path declines). ok is false when the
// question must be forwarded.
func (z *zone) lookup(qname string, qtype uint16) (ans localAnswer, ok bool) {
	name := strings.ToLower(qname)
	nr := z.byName[name]
	inDomain := name == z.domain || strings.HasSuffix(name, "."+z.domain)
	if nr == nil && !inDomain && miekg.CountLabel(name) == 1 {
		nr = z.byName[name+z.domain] // single label: completed with the domain when known
	}
	if nr != nil {
		return z.nameAnswer(qname, qtype, nr), true
	}
	if inDomain {
		return localAnswer{rcode: miekg.RcodeNameError, ns: []miekg.RR{z.soa}}, true
	}
	if addr, isRev := reverseAddr(name); isRev {
		if names := z.reverse[addr]; len(names) > 0 {
			if qtype != miekg.TypePTR {
				return localAnswer{rcode: miekg.RcodeSuccess}, true
			}
			ans := localAnswer{rcode: miekg.RcodeSuccess}
			for _, n := range names {
				ans.answer = append(ans.answer, &miekg.PTR{Hdr: z.hdr(qname, miekg.TypePTR), Ptr: n})
			}
			return ans, true
		}
		if z.rng.IsValid() && z.rng.Contains(addr) {
			return localAnswer{rcode: miekg.RcodeNameError}, true
		}
	}
	return localAnswer{}, false
}

func (z *zone) nameAnswer(qname string, qtype uint16, nr *nameRecords) localAnswer {
	ans := localAnswer{rcode: miekg.RcodeSuccess}
	switch {
	case qtype == miekg.TypeA:
		for _, a := range nr.v4 {
			ans.answer = append(ans.answer, &miekg.A{Hdr: z.hdr(qname, miekg.TypeA), A: a.AsSlice()})
		}
	case qtype == miekg.TypeAAAA:
		for _, a := range nr.v6 {
			ans.answer = append(ans.answer, &miekg.AAAA{Hdr: z.hdr(qname, miekg.TypeAAAA), AAAA: a.AsSlice()})
		}
	case qtype == miekg.TypeSOA && nr.apex:
		soa := *z.soa
		soa.Hdr.Name = qname
		ans.answer = append(ans.answer, &soa)
	}
	if len(ans.answer) == 0 {
		ans.ns = []miekg.RR{z.soa}
	}
	return ans
}

func (z *zone) hdr(name string, typ uint16) miekg.RR_Header {
	return miekg.RR_Header{Name: name, Rrtype: typ, Class: miekg.ClassINET, Ttl: z.ttl}
}
