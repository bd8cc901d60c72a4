package dns

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/weftmesh/weft/peer"
)

// Gossip messages carry records in a small binary format:
//
//	byte 0    wire version (1)
//	byte 1    kind: 1 delta (records of the sender only), 2 full state
//	uvarint   record count
//	records:  8-byte big-endian owner ID, uvarint version, flags byte
//	          (bit 0: tombstone), then name, address and container ID,
//	          each as a length byte and that many bytes.
//
// A decoder of untrusted bytes: every field is bounded and validated, and a
// message with any bad record is rejected as a whole.

const (
	wireVersion = 1
	kindDelta   = 1
	kindFull    = 2
	// maxWire bounds one message (gossip allows 16 MiB of full state).
	maxWire = 16 << 20
	// minRecordWire is the smallest encoded record, to bound the count.
	minRecordWire = 8 + 1 + 1 + 1 + 2 + 1 + 4 + 1
)

func encodeRecords(kind byte, recs []record) []byte {
	b := make([]byte, 0, 16+len(recs)*96)
	b = append(b, wireVersion, kind)
	b = binary.AppendUvarint(b, uint64(len(recs)))
	for _, r := range recs {
		b = binary.BigEndian.AppendUint64(b, uint64(r.Owner))
		b = binary.AppendUvarint(b, r.Version)
		var flags byte
		if r.Deleted {
			flags = 1
		}
		b = append(b, flags, byte(len(r.Name)))
		b = append(b, r.Name...)
		a := r.Addr.AsSlice()
		b = append(b, byte(len(a)))
		b = append(b, a...)
		b = append(b, byte(len(r.Container)))
		b = append(b, r.Container...)
	}
	return b
}

func decodeRecords(b []byte) (kind byte, recs []record, err error) {
	bad := func(format string, args ...any) (byte, []record, error) {
		return 0, nil, fmt.Errorf("decode records: %s: %w", fmt.Sprintf(format, args...), ErrBadMessage)
	}
	if len(b) > maxWire {
		return bad("%d bytes", len(b))
	}
	if len(b) < 3 {
		return bad("%d bytes, too short", len(b))
	}
	if b[0] != wireVersion {
		return bad("wire version %d", b[0])
	}
	kind = b[1]
	if kind != kindDelta && kind != kindFull {
		return bad("kind %d", kind)
	}
	n, w := binary.Uvarint(b[2:])
	if w <= 0 || n > uint64(len(b)/minRecordWire) {
		return bad("record count")
	}
	b = b[2+w:]
	recs = make([]record, 0, n)
	for i := uint64(0); i < n; i++ {
		var r record
		if len(b) < 8 {
			return bad("record %d: truncated owner", i)
		}
		r.Owner = peer.ID(binary.BigEndian.Uint64(b))
		b = b[8:]
		if r.Owner == 0 {
			return bad("record %d: zero owner", i)
		}
		r.Version, w = binary.Uvarint(b)
		if w <= 0 {
			return bad("record %d: version", i)
		}
		b = b[w:]
		if len(b) < 1 || b[0] > 1 {
			return bad("record %d: flags", i)
		}
		r.Deleted = b[0] == 1
		b = b[1:]
		var name, addr, cid []byte
		var ok bool
		if name, b, ok = lenPrefixed(b); !ok {
			return bad("record %d: truncated name", i)
		}
		if addr, b, ok = lenPrefixed(b); !ok {
			return bad("record %d: truncated address", i)
		}
		if cid, b, ok = lenPrefixed(b); !ok {
			return bad("record %d: truncated container ID", i)
		}
		r.Name = string(name)
		if !validFQDN(r.Name) {
			return bad("record %d: name %q", i, r.Name)
		}
		a, ok := netip.AddrFromSlice(addr)
		if !ok || !validAddr(a) {
			return bad("record %d: address %x", i, addr)
		}
		r.Addr = a
		r.Container = string(cid)
		if !validContainerID(r.Container) {
			return bad("record %d: container ID %q", i, r.Container)
		}
		recs = append(recs, r)
	}
	if len(b) != 0 {
		return bad("%d trailing bytes", len(b))
	}
	return kind, recs, nil
}

func lenPrefixed(b []byte) (field, rest []byte, ok bool) {
	if len(b) < 1 || len(b) < 1+int(b[0]) {
		return nil, nil, false
	}
	return b[1 : 1+int(b[0])], b[1+int(b[0]):], true
}

// validAddr accepts unicast-looking IPv4 and IPv6 addresses without zone
// (IPv4 never in 4-in-6 form, so that a key has one spelling).
func validAddr(a netip.Addr) bool {
	return a.IsValid() && !a.IsUnspecified() && a.Zone() == "" && !a.Is4In6()
}

// validContainerID accepts up to 255 printable ASCII bytes.
func validContainerID(s string) bool {
	if len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}
