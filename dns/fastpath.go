package dns

import (
	"encoding/binary"
	"math/rand/v2"

	miekg "github.com/miekg/dns"
)

// The UDP fast path answers the common case (one IN question for a name of
// the zone, optionally with an EDNS0 OPT record) straight from the raw
// packet into a reused buffer, without unpacking into a miekg Msg, without
// a goroutine per packet and without allocating. Everything else (other
// opcodes, several questions, reverse names, names to forward, answers
// larger than the client accepts, anything odd) is declined and takes the
// slow path: miekg unpacks it and ServeDNS answers, with the same zone.

// fastOutcome says what the fast path did with a packet.
type fastOutcome int

const (
	fastSlow     fastOutcome = iota // declined: take the slow path
	fastDrop                        // not a query (a response, or too short): never answer
	fastAnswer                      // answered NOERROR from the zone
	fastNXDomain                    // answered NXDOMAIN from the zone
)

// ednsSize is the UDP payload size we advertise (the DNS flag day value).
const ednsSize = 1232

// maxLabels bounds the labels of a 255-byte name.
const maxLabels = 128

// answerFast writes the response to query q into out[:0] and returns it.
func (z *zone) answerFast(q, out []byte) ([]byte, fastOutcome) {
	if len(q) < 12 {
		return nil, fastDrop
	}
	if q[2]&0x80 != 0 {
		return nil, fastDrop
	}
	if q[2]&0x78 != 0 || binary.BigEndian.Uint16(q[4:]) != 1 || binary.BigEndian.Uint16(q[6:]) != 0 ||
		binary.BigEndian.Uint16(q[8:]) != 0 || binary.BigEndian.Uint16(q[10:]) > 1 {
		return nil, fastSlow
	}
	// Question name, lowercased into key, with the offsets of its labels.
	var key [256]byte
	var starts [maxLabels]uint8
	kl, labels, off := 0, 0, 12
	for {
		if off >= len(q) {
			return nil, fastSlow
		}
		l := int(q[off])
		if l == 0 {
			key[kl] = 0
			kl++
			off++
			break
		}
		if l > 63 || kl+1+l+1 > 255 || off+1+l > len(q) {
			return nil, fastSlow
		}
		starts[labels] = uint8(kl)
		labels++
		key[kl] = byte(l)
		for i := 0; i < l; i++ {
			c := q[off+1+i]
			if c >= 'A' && c <= 'Z' {
				c += 'a' - 'A'
			}
			key[kl+1+i] = c
		}
		kl += 1 + l
		off += 1 + l
	}
	qEnd := off + 4
	if qEnd > len(q) || binary.BigEndian.Uint16(q[off+2:]) != miekg.ClassINET {
		return nil, fastSlow
	}
	qtype := binary.BigEndian.Uint16(q[off:])
	limit, edns := 512, false
	if binary.BigEndian.Uint16(q[10:]) == 1 {
		o := q[qEnd:]
		if len(o) < 11 || o[0] != 0 || binary.BigEndian.Uint16(o[1:]) != miekg.TypeOPT || o[6] != 0 ||
			len(o) != 11+int(binary.BigEndian.Uint16(o[9:])) {
			return nil, fastSlow
		}
		edns = true
		limit = max(512, int(binary.BigEndian.Uint16(o[3:])))
	} else if qEnd != len(q) {
		return nil, fastSlow
	}

	nr := z.byWire[string(key[:kl])]
	inDomain := false
	if dl := len(z.domainWire); kl >= dl {
		for i := 0; i < labels; i++ {
			if int(starts[i]) == kl-dl {
				inDomain = string(key[kl-dl:kl]) == string(z.domainWire)
				break
			}
		}
		inDomain = inDomain || (kl == dl && string(key[:kl]) == string(z.domainWire))
	}
	if nr == nil && !inDomain && labels == 1 {
		var full [256]byte
		n := copy(full[:], key[:kl-1])
		if n+len(z.domainWire) <= 255 {
			n += copy(full[n:], z.domainWire)
			nr = z.byWire[string(full[:n])]
		}
	}
	if nr == nil && !inDomain {
		return nil, fastSlow
	}

	rcode, outcome := miekg.RcodeSuccess, fastAnswer
	var answers []byte
	size := rrA
	switch {
	case nr == nil:
		rcode, outcome = miekg.RcodeNameError, fastNXDomain
	case qtype == miekg.TypeA:
		answers = nr.a
	case qtype == miekg.TypeAAAA:
		answers, size = nr.aaaa, rrAAAA
	case qtype == miekg.TypeSOA && nr.apex:
		answers, size = z.soaAnswer, len(z.soaAnswer)
	}
	an := len(answers) / size
	ns := 0
	if an == 0 {
		ns = 1
	}
	ar := 0
	if edns {
		ar = 1
	}

	b := out[:0]
	b = append(b, q[0], q[1], 0x80|0x04|(q[2]&0x01), 0x80|(q[3]&0x10)|byte(rcode))
	b = append(b, 0, 1, byte(an>>8), byte(an), 0, byte(ns), 0, byte(ar))
	b = append(b, q[12:qEnd]...)
	start := len(b)
	b = append(b, answers...)
	shuffleRRs(b[start:], size, an)
	if ns == 1 {
		b = append(b, z.soaAuth...)
	}
	if edns {
		b = append(b, 0, byte(miekg.TypeOPT>>8), byte(miekg.TypeOPT), ednsSize>>8, ednsSize&0xff, 0, 0, 0, 0, 0, 0)
	}
	if len(b) > limit {
		return nil, fastSlow
	}
	return b, outcome
}

// shuffleRRs permutes n fixed-size records in place (Fisher-Yates).
func shuffleRRs(b []byte, size, n int) {
	var tmp [rrAAAA]byte
	if size > len(tmp) {
		return
	}
	for i := n - 1; i > 0; i-- {
		j := rand.IntN(i + 1)
		if i == j {
			continue
		}
		copy(tmp[:size], b[i*size:(i+1)*size])
		copy(b[i*size:(i+1)*size], b[j*size:(j+1)*size])
		copy(b[j*size:(j+1)*size], tmp[:size])
	}
}
