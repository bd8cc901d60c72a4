package gossip

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/weftmesh/weft/peer"
)

func TestMetaRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		meta peer.Meta
	}{
		{"empty", peer.Meta{}},
		{"full", peer.Meta{Version: "v1.0.0", WGKey: "mF0jK0mXwKQ1b2n1Ol3k3a0N1YQ1JX0kNw0o1S7bUHk=", WGPort: 51820,
			Bridge: netip.MustParseAddr("10.32.0.1"), Transport: "wireguard"}},
		{"insecure", peer.Meta{Insecure: true, Transport: "vxlan"}},
		{"underlay", peer.Meta{Transport: "vxlan", Underlay: netip.MustParsePrefix("192.168.1.128/25")}},
		{"unreachable", peer.Meta{WGKey: "mF0jK0mXwKQ1b2n1Ol3k3a0N1YQ1JX0kNw0o1S7bUHk=", WGPort: 51820, Transport: "wireguard",
			Bridge: netip.MustParseAddr("10.32.0.1"), Version: "v1.0.0-123-gabcdef0-dirty", Joined: true,
			Unreachable: maxUnreachable(), UnreachableAt: time.UnixMilli(1796000000123)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := EncodeMeta(42, tc.meta)
			if err != nil {
				t.Fatalf("EncodeMeta: %v", err)
			}
			id, got, err := DecodeMeta(b)
			if err != nil || id != 42 {
				t.Fatalf("DecodeMeta = %v, %v; want 42, nil", id, err)
			}
			if diff := cmp.Diff(tc.meta, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
				cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b }),
				cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}

// maxUnreachable is the largest unreachable set, with the largest IDs.
func maxUnreachable() []peer.ID {
	var ids []peer.ID
	for i := range MaxUnreachable {
		ids = append(ids, peer.ID(^uint64(0)-uint64(i)))
	}
	return ids
}

func TestMetaUnreachableBounds(t *testing.T) {
	if _, err := EncodeMeta(1, peer.Meta{Unreachable: append(maxUnreachable(), 5)}); err == nil {
		t.Errorf("EncodeMeta with %d unreachable peers succeeded; want an error", MaxUnreachable+1)
	}
	for _, bad := range []string{`"ua":-1`, `"ua":"x"`, `"ur":"AAAAAAAAAAA"`, `"ur":"AQ"`, `"ur":"!!"`, `"ur":"AAAAAAAAAAE="`} {
		if _, _, err := DecodeMeta([]byte(`{"v":1,"id":"1",` + bad + `}`)); err == nil {
			t.Errorf("DecodeMeta(%s) succeeded; want an error", bad)
		}
	}
}

func FuzzDecodeMeta(f *testing.F) {
	good, _ := EncodeMeta(7, peer.Meta{Version: "x", WGPort: 1, Bridge: netip.MustParseAddr("10.32.0.1")})
	withUR, _ := EncodeMeta(7, peer.Meta{Unreachable: []peer.ID{1, 0xffffffffffffffff}})
	for _, s := range [][]byte{good, withUR, nil, []byte("{}"), []byte(`{"v":1,"id":"zz"}`), []byte(`{"v":2,"id":"01"}`),
		[]byte(`{"v":1,"id":"1","ep":["x"]}`), []byte(`{"v":1,"id":"1","br":"300.1.1.1"}`),
		[]byte(`{"v":1,"id":"1","ul":"192.168.1.0/33"}`)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		id, m, err := DecodeMeta(b)
		if err != nil {
			return
		}
		// Whatever decodes must encode again and decode to the same.
		b2, err := EncodeMeta(id, m)
		if err != nil {
			t.Fatalf("re-encode of decoded meta: %v", err)
		}
		id2, _, err := DecodeMeta(b2)
		if err != nil || id2 != id {
			t.Fatalf("decode(encode(decode(b))) = %v, %v", id2, err)
		}
	})
}

func FuzzDecodeFrame(f *testing.F) {
	f.Add(appendFrame(nil, frame{kind: kindBroadcast, channel: "ipam", origin: 9, payload: []byte("hello")}))
	f.Add(encodeState([]frame{{kind: kindState, channel: "dns", origin: 3, payload: []byte("s")}}))
	f.Add([]byte{1, 2, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if fr, err := decodeFrame(b); err == nil {
			again, err := decodeFrame(appendFrame(nil, fr))
			if err != nil || again.channel != fr.channel || again.origin != fr.origin || string(again.payload) != string(fr.payload) {
				t.Fatalf("frame round trip failed: %v", err)
			}
		}
		if frs, err := decodeState(b); err == nil {
			if _, err := decodeState(encodeState(frs)); err != nil {
				t.Fatalf("state round trip: %v", err)
			}
		}
	})
}
