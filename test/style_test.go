package test

import (
	"encoding/json"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The guards of docs/style.md rules 1 and 2 for the whole module, in one
// place: every package has a doc (some a usage sketch), and dependencies
// point one way.

// listed is what `go list -json` says of one package.
type listed struct {
	ImportPath string
	Name       string
	Doc        string
	Dir        string
	GoFiles    []string
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

// sketched are the packages whose doc must show an indented usage sketch.
var sketched = []string{"router", "router/routertest"}

// TestPackageDocs: every package says what it owns (docs/style.md rule 1).
func TestPackageDocs(t *testing.T) {
	for _, p := range goList(t) {
		if strings.TrimSpace(p.Doc) == "" {
			t.Errorf("package %s has no package doc comment", p.ImportPath)
		}
		if slices.Contains(sketched, strings.TrimPrefix(p.ImportPath, "github.com/weftmesh/weft/")) && !hasSketch(t, p) {
			t.Errorf("package %s has no doc comment with an indented usage sketch", p.ImportPath)
		}
	}
}

// hasSketch reports whether a doc comment of p shows indented code.
func hasSketch(t *testing.T, p listed) bool {
	t.Helper()
	for _, f := range p.GoFiles {
		af, err := parser.ParseFile(token.NewFileSet(), filepath.Join(p.Dir, f), nil, parser.PackageClauseOnly|parser.ParseComments)
		if err != nil {
			t.Fatalf("parse %s: %v", f, err)
		}
		if af.Doc != nil && strings.Contains(af.Doc.Text(), "\t") {
			return true
		}
	}
	return false
}

// TestDependencyRules guards the one-way dependencies of docs/style.md rule 2.
func TestDependencyRules(t *testing.T) {
	const mod = "github.com/weftmesh/weft/"
	// kube (client-go) is known to the daemon alone: client-go types stop
	// there, and weft-cni never links it.
	forbidden := map[string][]string{
		"peer":         {"gossip", "ipam", "dns", "router", "cni", "api", "daemon", "kube"},
		"gossip":       {"ipam", "dns", "router", "cni", "api", "daemon", "kube"},
		"ipam":         {"gossip", "dns", "router", "cni", "api", "daemon", "kube"},
		"dns":          {"gossip", "ipam", "router", "cni", "api", "daemon", "kube"},
		"router":       {"gossip", "ipam", "dns", "cni", "api", "daemon", "kube"},
		"cni":          {"gossip", "ipam", "dns", "router", "daemon", "kube"},
		"api":          {"gossip", "ipam", "dns", "router", "cni", "daemon", "kube"},
		"kube":         {"gossip", "ipam", "dns", "router", "cni", "api", "daemon"},
		"cmd/weft-cni": {"gossip", "ipam", "dns", "router", "daemon", "kube"},
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
		// weft-cni runs once per pod: it links only the plugin, its spool,
		// the API client and the value types.
		if rel == "cmd/weft-cni" {
			for _, d := range p.Deps {
				if r, ok := strings.CutPrefix(d, mod); ok && !slices.Contains([]string{"cni", "cni/spool", "api/client", "peer"}, r) {
					t.Errorf("weft-cni depends on %s; only cni, cni/spool, api/client and peer are allowed", d)
				}
			}
		}
		// Every package's tests may use testutil: it imports no weft package.
		if rel == "internal/testutil" {
			for _, d := range p.Deps {
				if strings.HasPrefix(d, mod) {
					t.Errorf("internal/testutil depends on %s; it may import no weft package", d)
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
