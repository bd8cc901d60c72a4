package gossip

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/weftmesh/weft/peer"
)

// Node metadata travels in every memberlist alive message, so it is small:
// a versioned JSON object with short keys, at most MetaMaxSize bytes.
// Unknown fields are ignored (a newer peer may add some); a different major
// version is refused, so an incompatible peer is visible rather than
// misread.

// MetaVersion is the wire version of node metadata.
const MetaVersion = 1

// MetaMaxSize is memberlist's limit for node metadata.
const MetaMaxSize = 512

// ErrBadMeta is wrapped by every metadata decoding error.
var ErrBadMeta = errors.New("bad peer metadata")

type wireMeta struct {
	V         int     `json:"v"`
	ID        peer.ID `json:"id"`
	Version   string  `json:"ver,omitempty"`
	WGKey     string  `json:"wg,omitempty"`
	WGPort    uint16  `json:"wgp,omitempty"`
	Bridge    string  `json:"br,omitempty"`
	Transport string  `json:"tr,omitempty"`
	Insecure  bool    `json:"insec,omitempty"`
	Joined    bool    `json:"jn,omitempty"`
	Underlay  string  `json:"ul,omitempty"`
	// Unreach is Meta.Unreachable: the 8-byte big-endian IDs, concatenated,
	// in unpadded base64 (11 bytes an ID instead of 19 as hex strings).
	Unreach string `json:"ur,omitempty"`
	// UnreachAt is Meta.UnreachableAt in Unix milliseconds (0: none).
	UnreachAt int64 `json:"ua,omitempty"`
}

// MaxUnreachable bounds Meta.Unreachable on the wire: 24 IDs take 256 of
// the 512 bytes. A peer that cannot reach more peers than that directly
// publishes the first MaxUnreachable (by ID); the others are assumed
// direct.
const MaxUnreachable = 24

func encodeIDs(ids []peer.ID) (string, error) {
	if len(ids) > MaxUnreachable {
		return "", fmt.Errorf("encode meta: %d unreachable peers, at most %d: %w", len(ids), MaxUnreachable, ErrTooLarge)
	}
	b := make([]byte, 0, 8*len(ids))
	for _, id := range ids {
		b = binary.BigEndian.AppendUint64(b, uint64(id))
	}
	return base64.RawStdEncoding.EncodeToString(b), nil
}

func decodeIDs(s string) ([]peer.ID, error) {
	b, err := base64.RawStdEncoding.Strict().DecodeString(s)
	if err != nil || len(b)%8 != 0 || len(b)/8 > MaxUnreachable {
		return nil, fmt.Errorf("decode meta: unreachable set %q: %w", s, ErrBadMeta)
	}
	ids := make([]peer.ID, 0, len(b)/8)
	for i := 0; i < len(b); i += 8 {
		id := peer.ID(binary.BigEndian.Uint64(b[i:]))
		if id == 0 {
			return nil, fmt.Errorf("decode meta: zero ID in unreachable set: %w", ErrBadMeta)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// EncodeMeta encodes a peer's ID and metadata for memberlist.
func EncodeMeta(id peer.ID, m peer.Meta) ([]byte, error) {
	w := wireMeta{V: MetaVersion, ID: id, Version: m.Version, WGKey: m.WGKey, WGPort: m.WGPort,
		Transport: m.Transport, Insecure: m.Insecure, Joined: m.Joined}
	if m.Bridge.IsValid() {
		w.Bridge = m.Bridge.String()
	}
	if m.Underlay.IsValid() {
		w.Underlay = m.Underlay.String()
	}
	ur, err := encodeIDs(m.Unreachable)
	if err != nil {
		return nil, err
	}
	w.Unreach = ur
	if !m.UnreachableAt.IsZero() {
		w.UnreachAt = m.UnreachableAt.UnixMilli()
	}
	b, err := json.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("encode meta: %w", err)
	}
	if len(b) > MetaMaxSize {
		return nil, fmt.Errorf("encode meta: %d bytes, at most %d: %w", len(b), MetaMaxSize, ErrTooLarge)
	}
	return b, nil
}

// DecodeMeta decodes metadata published by a peer. It never panics and
// rejects oversize, malformed or incompatible input.
func DecodeMeta(b []byte) (peer.ID, peer.Meta, error) {
	var m peer.Meta
	if len(b) == 0 {
		return 0, m, fmt.Errorf("decode meta: empty: %w", ErrBadMeta)
	}
	if len(b) > MetaMaxSize {
		return 0, m, fmt.Errorf("decode meta: %d bytes: %w", len(b), ErrBadMeta)
	}
	var w wireMeta
	if err := json.Unmarshal(b, &w); err != nil {
		return 0, m, fmt.Errorf("decode meta: %v: %w", err, ErrBadMeta)
	}
	if w.V != MetaVersion {
		return 0, m, fmt.Errorf("decode meta: version %d, want %d: %w", w.V, MetaVersion, ErrBadMeta)
	}
	if w.ID == 0 {
		return 0, m, fmt.Errorf("decode meta: zero peer ID: %w", ErrBadMeta)
	}
	m = peer.Meta{Version: w.Version, WGKey: w.WGKey, WGPort: w.WGPort, Transport: w.Transport, Insecure: w.Insecure, Joined: w.Joined}
	if w.Bridge != "" {
		a, err := netip.ParseAddr(w.Bridge)
		if err != nil {
			return 0, peer.Meta{}, fmt.Errorf("decode meta: bridge %q: %w", w.Bridge, ErrBadMeta)
		}
		m.Bridge = a
	}
	if w.Underlay != "" {
		p, err := netip.ParsePrefix(w.Underlay)
		if err != nil {
			return 0, peer.Meta{}, fmt.Errorf("decode meta: underlay %q: %w", w.Underlay, ErrBadMeta)
		}
		m.Underlay = p
	}
	if w.Unreach != "" {
		ids, err := decodeIDs(w.Unreach)
		if err != nil {
			return 0, peer.Meta{}, err
		}
		m.Unreachable = ids
	}
	if w.UnreachAt < 0 {
		return 0, peer.Meta{}, fmt.Errorf("decode meta: unreachable set time %d: %w", w.UnreachAt, ErrBadMeta)
	}
	if w.UnreachAt > 0 {
		m.UnreachableAt = time.UnixMilli(w.UnreachAt)
	}
	return w.ID, m, nil
}
