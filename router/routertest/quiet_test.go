package routertest

import (
	"net/netip"
	"testing"

	"github.com/weftmesh/weft/router"
)

// A quiet fake keeps its state and records no transcript.
func TestQuiet(t *testing.T) {
	k := NewKernel()
	k.AddLink(router.Link{Name: "eth0", Kind: "veth", MTU: 1500, Up: true})
	if err := k.RouteReplace(router.Route{Dst: netip.MustParsePrefix("10.1.0.0/24"), Dev: "eth0"}); err != nil {
		t.Fatal(err)
	}
	if got := k.Take(); len(got) != 1 {
		t.Fatalf("recording kernel: transcript %q, want one line", got)
	}
	k.Quiet()
	if err := k.RouteReplace(router.Route{Dst: netip.MustParsePrefix("10.2.0.0/24"), Dev: "eth0"}); err != nil {
		t.Fatal(err)
	}
	if got := k.Take(); len(got) != 0 {
		t.Errorf("quiet kernel: transcript %q, want none", got)
	}
	if got := k.Routes(); len(got) != 2 {
		t.Errorf("quiet kernel: routes %q, want both", got)
	}

	w := NewWG(k)
	w.Quiet()
	dev, err := w.Factory()(t.Context(), router.WGDeviceConfig{Name: "weft-wg", MTU: 1420})
	if err != nil {
		t.Fatal(err)
	}
	if err := dev.Configure("key", 51820, []router.WGPeer{{PublicKey: "peer"}}); err != nil {
		t.Fatal(err)
	}
	if got := w.Take(); len(got) != 0 {
		t.Errorf("quiet WireGuard device: transcript %q, want none", got)
	}
	if got := w.Configured(); got == "" {
		t.Error("quiet WireGuard device: Configured is empty, want its peers")
	}
	if _, err := k.LinkGet("weft-wg"); err != nil {
		t.Errorf("quiet WireGuard device: link not created: %v", err)
	}
}
