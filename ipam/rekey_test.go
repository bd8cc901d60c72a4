package ipam_test

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/weftmesh/weft/ipam"
	"github.com/weftmesh/weft/peer"
)

// TestRekey: an allocation moves to another ID with its address and a
// name, the old ID is free to allocate again (another address: the rekeyed
// one stays allocated), and the move survives a restart.
func TestRekey(t *testing.T) {
	c := newCluster(t, t.TempDir(), 1, "192.168.1.128/26", consensus(1), 7)
	defer c.close()
	id := c.ids[0]
	a := c.start(id)
	ctx := ctxT(t, 10*time.Second)
	p, err := a.Allocate(ctx, "pod")
	if err != nil {
		t.Fatal(err)
	}
	free := a.Status().Free
	if err := a.Rekey("pod", "weft:taken:"+p.Addr().String(), "answered ARP"); err != nil {
		t.Fatalf("Rekey = %v", err)
	}
	if q, ok := a.Lookup("weft:taken:" + p.Addr().String()); !ok || q != p {
		t.Fatalf("Lookup(new ID) = %v, %v; want %v", q, ok, p)
	}
	if _, ok := a.Lookup("pod"); ok {
		t.Fatalf("the old ID still has an allocation")
	}
	if st := a.Status(); st.Free != free {
		t.Fatalf("free after Rekey = %d; want %d (the address stays allocated)", st.Free, free)
	}
	q, err := a.Allocate(ctx, "pod")
	if err != nil || q == p {
		t.Fatalf("Allocate(pod) after Rekey = %v, %v; want another address than %v", q, err, p)
	}
	for _, tc := range []struct {
		from, to string
		want     error
	}{
		{"nobody", "x", ipam.ErrUnknownID},
		{"pod", "weft:taken:" + p.Addr().String(), ipam.ErrIDTaken},
		{"pod", "", ipam.ErrEmptyID},
	} {
		if err := a.Rekey(tc.from, tc.to, ""); !errors.Is(err, tc.want) {
			t.Errorf("Rekey(%q, %q) = %v; want %v", tc.from, tc.to, err, tc.want)
		}
	}
	c.stopPeer(id)
	a = c.start(id)
	var name string
	for _, al := range a.Status().Allocations {
		if al.ID == "weft:taken:"+p.Addr().String() {
			name = al.Name
		}
	}
	if name != "answered ARP" {
		t.Fatalf("after restart the rekeyed allocation has name %q; want %q", name, "answered ARP")
	}
}

// TestRefusedRange: messages of a ring with another range are refused, and
// their sender is listed until it sends our range.
func TestRefusedRange(t *testing.T) {
	mine := newCluster(t, t.TempDir(), 1, "192.168.1.128/26", consensus(1), 7)
	defer mine.close()
	other := newCluster(t, t.TempDir(), 1, "192.168.1.64/26", consensus(1), 8)
	defer other.close()
	a, b := mine.start(mine.ids[0]), other.start(other.ids[0])
	mine.waitReady(10 * time.Second)
	other.waitReady(10 * time.Second)
	from := peer.ID(0xbeef)
	if err := a.Merge(from, b.FullState()); !errors.Is(err, ipam.ErrDifferentRing) {
		t.Fatalf("Merge of another range = %v; want ErrDifferentRing", err)
	}
	r := a.Refused()
	if len(r) != 1 || r[0].Peer != from || r[0].Range != netip.MustParsePrefix("192.168.1.64/26") {
		t.Fatalf("Refused = %+v; want %s with 192.168.1.64/26", r, from)
	}
	// The same peer relaunched with our range (its full state of our ring).
	_ = a.Merge(from, a.FullState())
	if r := a.Refused(); len(r) != 0 {
		t.Fatalf("Refused after a message of our range = %+v; want none", r)
	}
}
