package api_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/weftmesh/weft/api/apitest"
)

// TestStatusPageInBrowser loads the page from the fake-backed server in
// headless Chromium; see apitest.CheckPage.
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
