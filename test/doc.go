// Package test holds weft's multi-peer end-to-end tests. Each test builds
// its own network-namespace test bed (package testbed), runs the real
// `weft launch` and `weft-cni` binaries in it, and removes everything when
// it ends. The tests need root and skip otherwise.
//
//	sudo go test -race -run TestMeshFormsFailsAndRejoins -v ./test/
package test
