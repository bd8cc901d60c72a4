// Package version holds weft's version, the one place it is kept. The
// Makefile sets it at build time; `weft version`, the API, the status page
// and the peer's gossip metadata all show this value. It owns nothing else.
//
//	go build -ldflags "-X github.com/weftmesh/weft/internal/version.Version=v1.2.3" ./cmd/weft
//	fmt.Println(version.Version)
package version

// Version is weft's version; a build without -ldflags is a development
// build.
var Version = "0.1.0-dev"
