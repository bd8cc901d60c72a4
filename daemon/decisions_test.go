package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/weftmesh/weft/api"
	"github.com/weftmesh/weft/ipam"
	"github.com/weftmesh/weft/peer"
)

func peerAt(name, addr string, st peer.State, joined bool) peer.Info {
	p := peer.Info{Name: name, State: st, Meta: peer.Meta{Joined: joined}}
	if addr != "" {
		p.Addr = netip.MustParseAddr(addr)
	}
	return p
}

func TestReachedTarget(t *testing.T) {
	h2 := peerAt("h2", "192.168.1.2", peer.Alive, true)
	tests := []struct {
		name    string
		others  []peer.Info
		targets []string
		want    bool
	}{
		{"no targets", []peer.Info{h2}, nil, false},
		{"by address", []peer.Info{h2}, []string{"192.168.1.2"}, true},
		{"by address and port", []peer.Info{h2}, []string{"192.168.1.2:6783"}, true},
		{"by name", []peer.Info{h2}, []string{"h2"}, true},
		{"another host", []peer.Info{h2}, []string{"192.168.1.3"}, false},
		{"target known but dead", []peer.Info{peerAt("h2", "192.168.1.2", peer.Dead, true)}, []string{"h2"}, false},
		{"target stopped", []peer.Info{peerAt("h2", "192.168.1.2", peer.Stopped, true)}, []string{"h2"}, false},
		{"no peers", nil, []string{"h2"}, false},
	}
	for _, tt := range tests {
		if got := reachedTarget(tt.others, tt.targets); got != tt.want {
			t.Errorf("%s: reachedTarget(%v) = %v; want %v", tt.name, tt.targets, got, tt.want)
		}
	}
}

func TestAllJoined(t *testing.T) {
	tests := []struct {
		name  string
		peers []peer.Info
		want  bool
	}{
		{"alone", []peer.Info{peerAt("h1", "", peer.Alive, true)}, true},
		{"all joined", []peer.Info{peerAt("h1", "", peer.Alive, true), peerAt("h2", "", peer.Alive, true)}, true},
		{"self not yet", []peer.Info{peerAt("h1", "", peer.Alive, false), peerAt("h2", "", peer.Alive, true)}, false},
		{"an alive peer not yet", []peer.Info{peerAt("h1", "", peer.Alive, true), peerAt("h2", "", peer.Alive, false)}, false},
		{"a dead peer never counts", []peer.Info{peerAt("h1", "", peer.Alive, true), peerAt("h2", "", peer.Dead, false)}, true},
	}
	for _, tt := range tests {
		if got := allJoined(tt.peers); got != tt.want {
			t.Errorf("%s: allJoined = %v; want %v", tt.name, got, tt.want)
		}
	}
}

func TestInRestartGrace(t *testing.T) {
	self := peerAt("h1", "", peer.Alive, true)
	tests := []struct {
		name        string
		up          time.Duration
		haveTargets bool
		peers       []peer.Info
		want        bool
	}{
		{"just restarted, nobody found yet", time.Second, true, []peer.Info{self}, true},
		{"just restarted, others known but dead", time.Second, true, []peer.Info{self, peerAt("h2", "", peer.Dead, true)}, true},
		{"found one alive", time.Second, true, []peer.Info{self, peerAt("h2", "", peer.Alive, true)}, false},
		{"grace over", 6 * time.Second, true, []peer.Info{self}, false},
		{"first peer of a mesh: nothing to wait for", time.Second, false, []peer.Info{self}, false},
		{"no peers at all", time.Second, true, nil, true},
	}
	for _, tt := range tests {
		if got := inRestartGrace(tt.up, tt.haveTargets, tt.peers); got != tt.want {
			t.Errorf("%s: inRestartGrace = %v; want %v", tt.name, got, tt.want)
		}
	}
}

func TestMapIPAMError(t *testing.T) {
	tests := []struct {
		in   error
		want error // nil: passed through unchanged
	}{
		{fmt.Errorf("allocate: %w", ipam.ErrNoSpace), api.ErrUnavailable},
		{fmt.Errorf("allocate: %w", context.DeadlineExceeded), api.ErrUnavailable},
		{fmt.Errorf("allocate: %w", context.Canceled), api.ErrUnavailable},
		{fmt.Errorf("reclaim: %w", ipam.ErrPeerAlive), api.ErrConflict},
		{fmt.Errorf("reclaim: %w", ipam.ErrReclaimedByOther), api.ErrConflict},
		{fmt.Errorf("reclaim: %w", ipam.ErrNoQuorum), api.ErrUnavailable},
		{fmt.Errorf("reclaim: %w", ipam.ErrNothingToReclaim), api.ErrNotFound},
		{errors.New("disk on fire"), nil},
	}
	for _, tt := range tests {
		got := mapIPAMError(tt.in)
		switch {
		case tt.want == nil && got != tt.in:
			t.Errorf("mapIPAMError(%v) = %v; want it unchanged", tt.in, got)
		case tt.want != nil && !errors.Is(got, tt.want):
			t.Errorf("mapIPAMError(%v) = %v; want %v", tt.in, got, tt.want)
		}
	}
}
