package cni

import (
	"go/parser"
	"go/token"
	"os/exec"
	"strings"
	"testing"
)

// weft-cni runs once per pod: it must not link the peer's subsystems.
func TestDependencies(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH")
	}
	out, err := exec.Command(gobin, "list", "-deps", "../cmd/weft-cni").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		rest, ok := strings.CutPrefix(dep, "github.com/weftmesh/weft/")
		if !ok {
			continue
		}
		switch rest {
		case "cni", "cni/spool", "api/client", "peer", "cmd/weft-cni":
		default:
			t.Errorf("weft-cni depends on %s; only cni, cni/spool, api/client and peer are allowed", dep)
		}
	}
}

func TestPackageDocs(t *testing.T) {
	for _, dir := range []string{".", "spool", "../cmd/weft-cni"} {
		pkgs, err := parser.ParseDir(token.NewFileSet(), dir, nil, parser.ParseComments|parser.PackageClauseOnly)
		if err != nil {
			t.Fatal(err)
		}
		for name, p := range pkgs {
			if strings.HasSuffix(name, "_test") {
				continue
			}
			doc := false
			for _, f := range p.Files {
				doc = doc || f.Doc != nil
			}
			if !doc {
				t.Errorf("package %s in %s has no doc comment", name, dir)
			}
		}
	}
}
