package router_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/weftmesh/weft/peer"
	"github.com/weftmesh/weft/router"
)

// TestRelayTranscripts: A and C cannot reach each other directly (both
// report it), B reaches both. C's ranges move to B — under WireGuard into
// B's AllowedIPs, C's WireGuard peer staying with none so that its
// handshakes go on probing the direct path; under VXLAN via B's bridge —
// and come back when the link heals. Each step changes only that, and
// applying a step twice changes nothing.
func TestRelayTranscripts(t *testing.T) {
	tests := []struct {
		name      string
		transport string
		insecure  bool
		relayed   func(*router.Config)
		want      []string
		back      []string
	}{
		{
			name: "wireguard", transport: router.TransportWireGuard,
			relayed: func(c *router.Config) { c.Unreachable, c.Peers[1].Unreachable = []peer.ID{0xc}, []peer.ID{0xa} },
			want: []string{
				"wg configure weft-wg port 51820 peers [pubB@192.168.1.11:51820 allowed 10.36.0.0/14,10.36.0.1/32,10.40.0.0/14,10.40.0.1/32,10.44.0.0/15; " +
					"pubC@172.16.0.12:51820 allowed ]",
			},
			back: []string{
				"wg configure weft-wg port 51820 peers [pubB@192.168.1.11:51820 allowed 10.36.0.0/14,10.36.0.1/32; " +
					"pubC@172.16.0.12:51820 allowed 10.40.0.0/14,10.40.0.1/32,10.44.0.0/15]",
			},
		},
		{
			name: "vxlan", transport: router.TransportVXLAN, insecure: true,
			relayed: func(c *router.Config) { c.Unreachable, c.Peers[1].Unreachable = []peer.ID{0xc}, []peer.ID{0xa} },
			want: []string{
				"route replace 10.40.0.0/14 via 10.36.0.1 dev weft-vx onlink src 10.32.0.1",
				"route replace 10.40.0.1/32 via 10.36.0.1 dev weft-vx onlink src 10.32.0.1",
				"route replace 10.44.0.0/15 via 10.36.0.1 dev weft-vx onlink src 10.32.0.1",
			},
			back: []string{
				"route replace 10.40.0.0/14 via 10.40.0.1 dev weft-vx onlink src 10.32.0.1",
				"route replace 10.40.0.1/32 via 10.40.0.1 dev weft-vx onlink src 10.32.0.1",
				"route replace 10.44.0.0/15 via 10.40.0.1 dev weft-vx onlink src 10.32.0.1",
			},
		},
		{
			name: "no path: B cannot reach C either, the direct route stays", transport: router.TransportVXLAN, insecure: true,
			relayed: func(c *router.Config) {
				c.Unreachable = []peer.ID{0xc}
				c.Peers[0].Unreachable = []peer.ID{0xc}
				c.Peers[1].Unreachable = []peer.ID{0xa, 0xb}
			},
		},
		{
			name: "only A reports C (C's control plane is down, its datapath sends to A directly): direct", transport: router.TransportWireGuard,
			relayed: func(c *router.Config) { c.Unreachable = []peer.ID{0xc} },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, router.Options{})
			base := testConfig(tt.transport, tt.insecure)
			f.set(t, base)
			rel := testConfig(tt.transport, tt.insecure)
			tt.relayed(&rel)
			if diff := cmp.Diff(tt.want, f.set(t, rel)); diff != "" {
				t.Errorf("relayed transcript (-want +got):\n%s", diff)
			}
			if got := f.set(t, rel); len(got) != 0 {
				t.Errorf("second Set of the relayed config changed the kernel:\n%q", got)
			}
			via, ok := f.r.PeerVia(0xc)
			if relayed := tt.want != nil; ok != relayed || (ok && via != 0xb) {
				t.Errorf("PeerVia(c) = %v, %v; want b, %v", via, ok, relayed)
			}
			if _, ok := f.r.PeerVia(0xb); ok {
				t.Errorf("PeerVia(b) says relayed; B is direct")
			}
			if diff := cmp.Diff(tt.back, f.set(t, base)); diff != "" {
				t.Errorf("healed transcript (-want +got):\n%s", diff)
			}
			if _, ok := f.r.PeerVia(0xc); ok {
				t.Errorf("PeerVia(c) still relayed after the link healed")
			}
		})
	}
}
