package gossip

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/weftmesh/weft/peer"
)

// Every message weft puts on memberlist is framed so that the receiver
// knows which channel it is for and which peer originated it (memberlist
// relays broadcasts and does not say who sent them):
//
//	byte 0     wire version (1)
//	byte 1     kind: 1 broadcast, 2 unicast, 4 goodbye, 5 stop, 6 digest
//	           (4-6 mesh-internal)
//	byte 2     channel name length n (1..32)
//	3..3+n     channel name
//	+8         origin peer ID, big endian
//	rest       payload (the channel's own encoding)
//
// Push-pull state is a sequence of such frames (kind 3), each prefixed by a
// 4-byte big-endian length, so one exchange carries every channel's state.

const (
	wireVersion   = 1
	kindBroadcast = 1
	kindUnicast   = 2
	kindState     = 3
	kindBye       = 4 // mesh-internal: the origin is leaving the mesh for good
	kindStop      = 5 // mesh-internal: the origin's control plane is stopping (it stays a member)
	// kindDigest = 6: mesh-internal anti-entropy digest (antientropy.go)
	maxChanName = 32
	// MaxMessage bounds one channel message (broadcast or unicast).
	MaxMessage = 1 << 20
	// MaxState bounds one channel's full state in push-pull.
	MaxState = 16 << 20
	// maxStateTotal bounds a whole push-pull payload.
	maxStateTotal = 64 << 20
)

// ErrBadFrame is wrapped by every framing error.
var ErrBadFrame = errors.New("bad gossip frame")

type frame struct {
	kind    byte
	channel string
	origin  peer.ID
	payload []byte
}

func appendFrame(dst []byte, f frame) []byte {
	dst = append(dst, wireVersion, f.kind, byte(len(f.channel)))
	dst = append(dst, f.channel...)
	dst = binary.BigEndian.AppendUint64(dst, uint64(f.origin))
	return append(dst, f.payload...)
}

// decodeFrame parses one frame; the payload aliases b.
func decodeFrame(b []byte) (frame, error) {
	var f frame
	if len(b) < 3 {
		return f, fmt.Errorf("frame of %d bytes: %w", len(b), ErrBadFrame)
	}
	if b[0] != wireVersion {
		return f, fmt.Errorf("frame version %d: %w", b[0], ErrBadFrame)
	}
	f.kind = b[1]
	if f.kind < kindBroadcast || f.kind > kindDigest {
		return f, fmt.Errorf("frame kind %d: %w", f.kind, ErrBadFrame)
	}
	n := int(b[2])
	if n == 0 || n > maxChanName || len(b) < 3+n+8 {
		return f, fmt.Errorf("frame channel length %d in %d bytes: %w", n, len(b), ErrBadFrame)
	}
	f.channel = string(b[3 : 3+n])
	f.origin = peer.ID(binary.BigEndian.Uint64(b[3+n:]))
	f.payload = b[3+n+8:]
	limit := MaxMessage
	if f.kind == kindState {
		limit = MaxState
	}
	if len(f.payload) > limit {
		return f, fmt.Errorf("frame payload %d bytes: %w", len(f.payload), ErrBadFrame)
	}
	return f, nil
}

// encodeState concatenates length-prefixed state frames.
func encodeState(frames []frame) []byte {
	var out []byte
	for _, f := range frames {
		enc := appendFrame(nil, f)
		out = binary.BigEndian.AppendUint32(out, uint32(len(enc)))
		out = append(out, enc...)
	}
	return out
}

// decodeState splits a push-pull payload into frames; payloads alias b.
func decodeState(b []byte) ([]frame, error) {
	if len(b) > maxStateTotal {
		return nil, fmt.Errorf("state of %d bytes: %w", len(b), ErrBadFrame)
	}
	var out []frame
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, fmt.Errorf("truncated state length: %w", ErrBadFrame)
		}
		n := binary.BigEndian.Uint32(b)
		b = b[4:]
		if uint64(n) > uint64(len(b)) {
			return nil, fmt.Errorf("state frame of %d bytes in %d: %w", n, len(b), ErrBadFrame)
		}
		f, err := decodeFrame(b[:n])
		if err != nil {
			return nil, err
		}
		if f.kind != kindState {
			return nil, fmt.Errorf("kind %d in state: %w", f.kind, ErrBadFrame)
		}
		out = append(out, f)
		b = b[n:]
	}
	return out, nil
}
