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
