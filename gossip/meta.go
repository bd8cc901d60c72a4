package gossip

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"

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
	return w.ID, m, nil
}
