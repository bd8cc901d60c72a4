package router_test

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// TestPackageDocs fails when router or routertest lacks a package doc with a
// usage sketch.
func TestPackageDocs(t *testing.T) {
	for _, dir := range []string{".", "routertest"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
		found := false
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.PackageClauseOnly|parser.ParseComments)
			if err != nil {
				t.Fatalf("parse %s: %v", f, err)
			}
			if af.Doc != nil && strings.Contains(af.Doc.Text(), "\t") {
				found = true
			}
		}
		if !found {
			t.Errorf("package in %s has no doc comment with an indented usage sketch", dir)
		}
	}
}
