package ipam

// Wire format. Every message is
//
//	magic 'W' | version 1 | kind | range addr (4) | range bits (1) |
//	seed (8) | req ID (8) | flags (1) |
//	paxos key: kind (1) dead (8) hash (8) | ballot N (4) P (8) |
//	accepted ballot N (4) P (8) | n values (2) | values (8 each) |
//	n tokens (4) | tokens: start (4) owner (8) version (4) free (4)
//
// all big-endian. One fixed layout for every kind keeps the decoder small
// (it is fuzzed: FuzzDecode); unused fields are zero. A delta of a few
// tokens is ~100 bytes; a full ring of 1,000 tokens ~20 KB. The decoder
// bounds every count before allocating and rejects unsorted, duplicate or
// out-of-range tokens.

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/weftmesh/weft/peer"
)

const (
	wireMagic   = 'W'
	wireVersion = 1
	headerLen   = 3 + 5 + 8 + 8 + 1 + 17 + 12 + 12 + 2
	tokenLen    = 20
	// maxTokens bounds a ring: 100k tokens is a 2 MB full state.
	maxTokens = 100_000
	// maxValues bounds a Paxos value (the launch peers).
	maxValues = 4096
	// deltaTokens is how many tokens one broadcast delta carries
	// (~40*20+70 bytes, under the 1 KB broadcast budget).
	deltaTokens = 40
)

type kind uint8

const (
	kindFull        kind = iota + 1 // the whole ring (FullState, bootstrap answers)
	kindDelta                       // changed tokens
	kindPrepare                     // Paxos phase 1a
	kindPromise                     // Paxos phase 1b
	kindAccept                      // Paxos phase 2a
	kindAccepted                    // Paxos phase 2b
	kindNack                        // Paxos refusal (flags say why)
	kindChosen                      // Paxos: value chosen, told to the reclaim winner
	kindDonateReq                   // please give me space
	kindDonateReply                 // here is space (tokens), or none (flags)
	kindHandoff                     // take all of these tokens, I am leaving
	kindHandoffAck                  // taken (flags: ok)
	kindMax
)

// Message flags.
const (
	flagOK       = 1 << iota // donation/handoff succeeded
	flagMismatch             // Nack: my view of the dead peer differs
	flagAlive                // Nack: the peer to reclaim is alive to me
	flagHasRing              // Nack: bootstrap is over, I sent you my ring
)

// ballot orders Paxos proposals: N first, proposer ID breaks ties.
type ballot struct {
	N uint32
	P peer.ID
}

func (b ballot) less(c ballot) bool { return b.N < c.N || (b.N == c.N && b.P < c.P) }

// Paxos instance kinds.
const (
	instBootstrap = 1
	instReclaim   = 2
)

// instanceKey names one single-decree Paxos instance.
type instanceKey struct {
	Kind uint8
	Dead peer.ID // reclaim: the dead peer
	Hash uint64  // reclaim: hashTokens of the dead peer's tokens
}

type message struct {
	Kind     kind
	Range    netip.Prefix
	Seed     uint64
	ReqID    uint64
	Flags    uint8
	Key      instanceKey
	Ballot   ballot
	Accepted ballot
	Value    []peer.ID
	Tokens   []Token
}

func (m *message) encode() []byte {
	b := make([]byte, 0, headerLen+8*len(m.Value)+4+tokenLen*len(m.Tokens))
	b = append(b, wireMagic, wireVersion, byte(m.Kind))
	a4 := m.Range.Addr().As4()
	b = append(b, a4[:]...)
	b = append(b, byte(m.Range.Bits()))
	b = binary.BigEndian.AppendUint64(b, m.Seed)
	b = binary.BigEndian.AppendUint64(b, m.ReqID)
	b = append(b, m.Flags, m.Key.Kind)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Key.Dead))
	b = binary.BigEndian.AppendUint64(b, m.Key.Hash)
	for _, bl := range []ballot{m.Ballot, m.Accepted} {
		b = binary.BigEndian.AppendUint32(b, bl.N)
		b = binary.BigEndian.AppendUint64(b, uint64(bl.P))
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.Value)))
	for _, v := range m.Value {
		b = binary.BigEndian.AppendUint64(b, uint64(v))
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.Tokens)))
	for _, t := range m.Tokens {
		b = binary.BigEndian.AppendUint32(b, t.Start)
		b = binary.BigEndian.AppendUint64(b, uint64(t.Owner))
		b = binary.BigEndian.AppendUint32(b, t.Version)
		b = binary.BigEndian.AppendUint32(b, t.Free)
	}
	return b
}

func decodeErr(format string, args ...any) error {
	return fmt.Errorf("decode ipam message: "+format+": %w", append(args, ErrBadMessage)...)
}

// decode parses and validates a message. Tokens must be strictly sorted and
// inside the message's range; the caller checks that range against its own.
func decode(b []byte) (*message, error) {
	if len(b) < headerLen+4 {
		return nil, decodeErr("%d bytes, short", len(b))
	}
	if b[0] != wireMagic || b[1] != wireVersion {
		return nil, decodeErr("magic/version %x %d", b[0], b[1])
	}
	m := &message{Kind: kind(b[2])}
	if m.Kind == 0 || m.Kind >= kindMax {
		return nil, decodeErr("kind %d", b[2])
	}
	addr := netip.AddrFrom4([4]byte(b[3:7]))
	if b[7] > 32 {
		return nil, decodeErr("prefix length %d", b[7])
	}
	m.Range = netip.PrefixFrom(addr, int(b[7]))
	if m.Range.Masked() != m.Range {
		return nil, decodeErr("range %s not masked", m.Range)
	}
	p := b[8:]
	m.Seed = binary.BigEndian.Uint64(p)
	m.ReqID = binary.BigEndian.Uint64(p[8:])
	m.Flags = p[16]
	m.Key.Kind = p[17]
	m.Key.Dead = peer.ID(binary.BigEndian.Uint64(p[18:]))
	m.Key.Hash = binary.BigEndian.Uint64(p[26:])
	m.Ballot = ballot{N: binary.BigEndian.Uint32(p[34:]), P: peer.ID(binary.BigEndian.Uint64(p[38:]))}
	m.Accepted = ballot{N: binary.BigEndian.Uint32(p[46:]), P: peer.ID(binary.BigEndian.Uint64(p[50:]))}
	nv := int(binary.BigEndian.Uint16(p[58:]))
	p = p[60:]
	if nv > maxValues || len(p) < 8*nv+4 {
		return nil, decodeErr("%d values", nv)
	}
	if nv > 0 {
		m.Value = make([]peer.ID, nv)
		for i := range m.Value {
			m.Value[i] = peer.ID(binary.BigEndian.Uint64(p[8*i:]))
		}
	}
	p = p[8*nv:]
	nt := binary.BigEndian.Uint32(p)
	p = p[4:]
	if nt > maxTokens || uint64(len(p)) != uint64(nt)*tokenLen {
		return nil, decodeErr("%d tokens in %d bytes", nt, len(p))
	}
	size := uint64(1) << (32 - m.Range.Bits())
	if nt > 0 {
		m.Tokens = make([]Token, nt)
	}
	for i := range m.Tokens {
		q := p[i*tokenLen:]
		t := Token{
			Start:   binary.BigEndian.Uint32(q),
			Owner:   peer.ID(binary.BigEndian.Uint64(q[4:])),
			Version: binary.BigEndian.Uint32(q[12:]),
			Free:    binary.BigEndian.Uint32(q[16:]),
		}
		switch {
		case uint64(t.Start) >= size:
			return nil, decodeErr("token %d out of range %s", t.Start, m.Range)
		case i > 0 && t.Start <= m.Tokens[i-1].Start:
			return nil, decodeErr("token %d unsorted or overlapping", t.Start)
		case t.Owner == 0:
			return nil, decodeErr("token %d has no owner", t.Start)
		case uint64(t.Free) > size:
			return nil, decodeErr("token %d free %d > range", t.Start, t.Free)
		}
		m.Tokens[i] = t
	}
	if m.Kind == kindFull && nt > 0 && m.Tokens[0].Start != 0 {
		return nil, decodeErr("full ring does not start at 0")
	}
	if m.Kind == kindFull && nt > 0 && m.Seed == 0 {
		return nil, decodeErr("full ring without seed")
	}
	return m, nil
}
