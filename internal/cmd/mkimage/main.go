// Command mkimage is `make image`: it packs the static weft and weft-cni
// binaries into weft's container image (internal/ociimage), a
// docker-archive tarball for `ctr -n k8s.io images import` or `docker load`.
//
//	go run ./internal/cmd/mkimage -o bin/weft-image.tar -tag docker.io/weftmesh/weft:latest bin/weft bin/weft-cni
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/weftmesh/weft/internal/ociimage"
	"github.com/weftmesh/weft/internal/version"
)

func main() {
	out := flag.String("o", "bin/weft-image.tar", "output tarball")
	tag := flag.String("tag", "docker.io/weftmesh/weft:latest", "image reference")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: mkimage -o FILE -tag REF BINARY...")
		os.Exit(2)
	}
	files := map[string]ociimage.File{}
	for _, b := range flag.Args() {
		data, err := os.ReadFile(b)
		if err != nil {
			fmt.Fprintln(os.Stderr, "mkimage:", err)
			os.Exit(1)
		}
		files["usr/local/bin/"+filepath.Base(b)] = ociimage.File{Data: data, Mode: 0o755}
	}
	err := ociimage.Write(*out, ociimage.Spec{
		Tag:        *tag,
		Files:      files,
		Entrypoint: []string{"/usr/local/bin/weft"},
		Env:        []string{"PATH=/usr/local/bin"},
		Labels: map[string]string{
			"org.opencontainers.image.title":   "weft",
			"org.opencontainers.image.version": version.Version,
			"org.opencontainers.image.source":  "https://github.com/weftmesh/weft",
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}
