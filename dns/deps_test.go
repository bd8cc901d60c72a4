package dns

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies guards the layering: dns never imports the other
// subsystems (gossip, ipam, router, cni, api); only the daemon wires them.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/weftmesh/weft/dns").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"gossip", "ipam", "router", "cni", "api", "daemon"} {
			if dep == "github.com/weftmesh/weft/"+banned || strings.HasPrefix(dep, "github.com/weftmesh/weft/"+banned+"/") {
				t.Errorf("dns depends on %s", dep)
			}
		}
	}
}
