package test

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// listed is what `go list -json` says of one package.
type listed struct {
	ImportPath string
	Name       string
	Doc        string
	Deps       []string
	Imports    []string
}

func goList(t *testing.T) []listed {
	t.Helper()
	out, err := exec.Command("go", "list", "-json", "github.com/weftmesh/weft/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []listed
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p listed
		if err := dec.Decode(&p); err != nil {
			t.Fatalf("decode go list: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// TestPackageDocs: every package says what it owns (docs/style.md rule 1).
func TestPackageDocs(t *testing.T) {
	for _, p := range goList(t) {
		if strings.TrimSpace(p.Doc) == "" {
			t.Errorf("package %s has no package doc comment", p.ImportPath)
		}
	}
}

// TestDependencyRules guards the one-way dependencies of docs/style.md rule 2.
func TestDependencyRules(t *testing.T) {
	const mod = "github.com/weftmesh/weft/"
	forbidden := map[string][]string{
		"peer":         {"gossip", "ipam", "dns", "router", "cni", "api", "daemon"},
		"gossip":       {"ipam", "dns", "router", "cni", "api", "daemon"},
		"ipam":         {"gossip", "dns", "router", "cni", "api", "daemon"},
		"dns":          {"gossip", "ipam", "router", "cni", "api", "daemon"},
		"router":       {"gossip", "ipam", "dns", "cni", "api", "daemon"},
		"cni":          {"gossip", "ipam", "dns", "router", "daemon"},
		"api":          {"gossip", "ipam", "dns", "router", "cni", "daemon"},
		"cmd/weft-cni": {"gossip", "ipam", "dns", "router", "daemon"},
	}
	for _, p := range goList(t) {
		rel := strings.TrimPrefix(p.ImportPath, mod)
		for root, bad := range forbidden {
			if rel != root && !strings.HasPrefix(rel, root+"/") {
				continue
			}
			for _, d := range p.Deps {
				for _, b := range bad {
					if d == mod+b || strings.HasPrefix(d, mod+b+"/") {
						t.Errorf("%s depends on %s (forbidden: %s must not import %s)", p.ImportPath, d, root, b)
					}
				}
			}
		}
		if rel == "peer" {
			for _, d := range p.Deps {
				if strings.Contains(strings.SplitN(d, "/", 2)[0], ".") {
					t.Errorf("peer depends on %s; it may import only the standard library", d)
				}
			}
		}
	}
}
