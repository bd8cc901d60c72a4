package api_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/weftmesh/weft/api"
	"github.com/weftmesh/weft/api/apitest"
	"github.com/weftmesh/weft/api/client"
)

// TestStatusPageInBrowser loads the page from a server with the fake mesh
// in headless Chromium; see apitest.CheckPage.
func TestStatusPageInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	ts := startServer(t)
	rep := apitest.CheckPage(t, ts.base+"/", 3, "")
	if want := []string{"h1", "h2", "h3"}; !cmp.Equal(rep.Peers, want) {
		t.Errorf("page peers = %v; want %v", rep.Peers, want)
	}
	if want := []string{"alive", "alive", "dead"}; !cmp.Equal(rep.States, want) {
		t.Errorf("page states = %v; want %v", rep.States, want)
	}
	if rep.Ranges != 4 || rep.DNSRecords != 5 || rep.Pods != 2 {
		t.Errorf("page shows %d ranges, %d DNS records, %d pods; want 4, 5, 2", rep.Ranges, rep.DNSRecords, rep.Pods)
	}
	derived := slices.ContainsFunc(rep.Problems, func(p string) bool {
		return strings.Contains(p, "range 10.40.0.0/14 owned by unreachable peer h3") && strings.Contains(p, "weft rmpeer h3")
	})
	if !derived {
		t.Errorf("page problems = %q; want the unreachable range of h3 with its rmpeer command", rep.Problems)
	}
}

// TestStatusPageUnderlay: a peer with an underlay pool shows it, its taken
// addresses, and the mode of each local pod.
func TestStatusPageUnderlay(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	ts := startWith(t, func(f *apitest.Fakes) api.Backends {
		st := &f.Reporter.Snapshot
		for i := range st.Pods {
			st.Pods[i].Mode = "routed"
		}
		st.Pods = append(st.Pods, client.Pod{ContainerID: "beefbeefbeef", IfName: "eth0", Name: "lat.default", Address: "192.168.1.201", Mode: "macvlan"})
		st.Underlay = &client.UnderlayStatus{
			IPAMStatus: client.IPAMStatus{Range: "192.168.1.192/26", Status: "ready", Owned: 32, Free: 28, Allocated: 4,
				Owners: []client.IPAMOwner{{Name: "h1", ID: apitest.SelfID, Owned: 32, Share: 0.5, Free: 28, Reachable: true}}},
			Master: "eth0", Gateway: "192.168.1.1", HostAddress: "192.168.1.193",
			Taken: []client.TakenAddress{{Address: "192.168.1.194", Reason: "answered ARP from 02:00:00:00:00:09"}},
		}
		return f.Backends()
	})
	rep := apitest.CheckPage(t, ts.base+"/", 3, "")
	if want := []string{"routed", "routed", "macvlan"}; !cmp.Equal(rep.Modes, want) {
		t.Errorf("page pod modes = %v; want %v", rep.Modes, want)
	}
	if want := []string{"192.168.1.194"}; !cmp.Equal(rep.Taken, want) {
		t.Errorf("page taken addresses = %v; want %v", rep.Taken, want)
	}
}

func TestStatusPageLargeMesh(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	// 20 more peers, some dead, some left.
	ts := startWith(t, func(f *apitest.Fakes) api.Backends {
		st := &f.Reporter.Snapshot
		for i := range 20 {
			p := client.Peer{Name: fmt.Sprintf("node-%02d", i+4), ID: fmt.Sprintf("%016x", 0x1000+i), Address: fmt.Sprintf("192.168.50.%d", i+4),
				State: "alive", Transport: "wireguard", Endpoint: fmt.Sprintf("192.168.50.%d:51820", i+4), RxBytes: int64(i) << 20, TxBytes: int64(i) << 19}
			switch i % 7 {
			case 3:
				p.State, p.Reason = "dead", "unreachable (failure detector)"
			case 5:
				p.State = "left"
			}
			st.Peers = append(st.Peers, p)
		}
		return f.Backends()
	})
	out := apitest.OutDir(t)
	if os.Getenv("WEFT_TEST_OUT") != "" {
		out = filepath.Join(out, "large-mesh")
		os.MkdirAll(out, 0o755)
	}
	rep := apitest.CheckPage(t, ts.base+"/", 23, out)
	dead := slices.ContainsFunc(rep.Problems, func(p string) bool { return strings.Contains(p, "node-07 is dead") })
	if slices.ContainsFunc(rep.Problems, func(p string) bool { return strings.Contains(p, "node-09") }) {
		t.Errorf("page problems = %q; a peer that left is not a problem", rep.Problems)
	}
	if !dead {
		t.Errorf("page problems = %q; want the dead node-07 named", rep.Problems)
	}
}
