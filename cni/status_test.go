package cni

import (
	"bytes"
	"errors"
	"path/filepath"
	"slices"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
)

func TestStatus(t *testing.T) {
	peer := newFakePeer(t, "weft")
	conf := func(socket string) []byte {
		return []byte(`{"cniVersion":"1.1.0","name":"weft","type":"weft-cni","socket":"` + socket + `"}`)
	}
	tests := []struct {
		name     string
		socket   string
		ready    bool
		reason   string
		wantCode uint // 0 = ok
		wantMsg  string
	}{
		{name: "ready", socket: peer.socket, ready: true},
		{name: "not ready", socket: peer.socket, reason: "awaiting consensus (known 1 of quorum 2)", wantCode: types.ErrPluginNotAvailable, wantMsg: "weft peer not ready: awaiting consensus (known 1 of quorum 2)"},
		{name: "not running", socket: filepath.Join(t.TempDir(), "x.sock"), wantCode: types.ErrPluginNotAvailable, wantMsg: "start it with 'weft launch'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			peer.mu.Lock()
			peer.ready.Ready, peer.ready.Reason = tt.ready, tt.reason
			peer.mu.Unlock()
			err := New(&bytes.Buffer{}, nil).Status(&skel.CmdArgs{StdinData: conf(tt.socket)})
			if tt.wantCode == 0 {
				if err != nil {
					t.Fatalf("Status = %v; want nil", err)
				}
				return
			}
			var te *types.Error
			if !errors.As(err, &te) || te.Code != tt.wantCode || !bytes.Contains([]byte(te.Msg), []byte(tt.wantMsg)) {
				t.Fatalf("Status = %v; want code %d with %q", err, tt.wantCode, tt.wantMsg)
			}
		})
	}
}

func TestGC(t *testing.T) {
	peer := newFakePeer(t, "weft")
	peer.mu.Lock()
	peer.allocs = map[string]string{"keep1": "10.32.0.2/12", "keep2:net1": "10.32.0.3/12", "stale": "10.32.0.4/12"}
	peer.mu.Unlock()
	conf := `{"cniVersion":"1.1.0","name":"weft","type":"weft-cni","socket":"` + peer.socket + `",
		"cni.dev/valid-attachments":[{"containerID":"keep1","ifname":"eth0"},{"containerID":"keep2","ifname":"net1"}]}`
	if err := New(&bytes.Buffer{}, nil).GC(&skel.CmdArgs{StdinData: []byte(conf)}); err != nil {
		t.Fatalf("GC = %v", err)
	}
	allocs, _, _ := peer.state()
	peer.mu.Lock()
	keep := slices.Clone(peer.gcKeep)
	peer.mu.Unlock()
	if want := []string{"keep1", "keep2:net1"}; !slices.Equal(keep, want) {
		t.Errorf("GC sent keep %v; want %v", keep, want)
	}
	if _, ok := allocs["stale"]; ok || len(allocs) != 2 {
		t.Errorf("allocations after GC = %v; want stale released", allocs)
	}
}

// The log file gets one JSON line per command with the component.
func TestLogFile(t *testing.T) {
	peer := newFakePeer(t, "weft")
	log := filepath.Join(t.TempDir(), "sub", "cni.json")
	conf := `{"cniVersion":"1.1.0","name":"weft","type":"weft-cni","socket":"` + peer.socket + `","logFile":"` + log + `"}`
	if err := New(&bytes.Buffer{}, nil).Status(&skel.CmdArgs{StdinData: []byte(conf)}); err != nil {
		t.Fatalf("Status = %v", err)
	}
	b, err := readFile(log)
	if err != nil || !bytes.Contains(b, []byte(`"component":"cni"`)) || !bytes.Contains(b, []byte(`"cmd":"STATUS"`)) {
		t.Fatalf("log %q, %v; want a JSON line with component and cmd", b, err)
	}
}
