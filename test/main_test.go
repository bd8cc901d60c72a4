// Package test holds weft's multi-peer end-to-end tests. Each test builds
// its own namespace test bed (package testbed), runs the real binaries in
// it, and removes everything when it ends. They need root and skip
// otherwise.
package test

import (
	"os"
	"testing"

	"github.com/weftmesh/weft/test/testbed"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testbed.CleanupBinaries()
	os.Exit(code)
}
