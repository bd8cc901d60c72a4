package main

import (
	"os"
	"testing"
	"testing/synctest"
)

// TestScale is `make scale`: the command's measurements, each size in a
// synctest bubble (virtual time). It needs a *testing.T, hence a test; it
// runs only when WEFT_SCALE is set, with the command's flags after -args
// (-out must be absolute: go test runs in this directory).
func TestScale(t *testing.T) {
	if os.Getenv("WEFT_SCALE") == "" {
		t.Skip("make scale runs this (WEFT_SCALE=1)")
	}
	runAll(func(f func()) {
		synctest.Test(t, func(*testing.T) { f() })
	})
}
