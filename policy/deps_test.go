package policy

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies guards what the package doc promises: policy is pure
// (no client-go, no netlink, no nftables, no other weft package), and
// policy/nft reaches the kernel but knows nothing of Kubernetes clients
// or of weft's other subsystems.
func TestDependencies(t *testing.T) {
	for pkg, forbidden := range map[string][]string{
		"github.com/weftmesh/weft/policy": {"k8s.io/client-go", "github.com/google/nftables", "github.com/vishvananda/",
			"github.com/mdlayher/", "github.com/weftmesh/weft/"},
		"github.com/weftmesh/weft/policy/nft": {"k8s.io/client-go", "github.com/weftmesh/weft/router", "github.com/weftmesh/weft/daemon",
			"github.com/weftmesh/weft/kube", "github.com/weftmesh/weft/gossip", "github.com/weftmesh/weft/ipam"},
	} {
		out, err := exec.Command("go", "list", "-deps", pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		for _, d := range strings.Fields(string(out)) {
			if d == pkg || strings.HasPrefix(d, pkg+"/") {
				continue
			}
			for _, f := range forbidden {
				if strings.HasPrefix(d, f) && !(pkg == "github.com/weftmesh/weft/policy/nft" && d == "github.com/weftmesh/weft/policy") {
					t.Errorf("%s depends on %s (forbidden: %s)", pkg, d, f)
				}
			}
		}
	}
}
