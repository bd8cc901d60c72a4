package kubebed

// Container images without a daemon or a registry. The packing itself is
// internal/ociimage (go-containerregistry, docker-archive, reproducible),
// which `make image` uses for weft's own image; WriteImage is the harness's
// short form of it.

import (
	"github.com/weftmesh/weft/internal/ociimage"
)

// WriteImage writes a single-layer linux image to tarPath (docker-archive:
// `ctr images import` and `docker load` accept it), tagged tag
// (e.g. "localhost/weft-test/testbox:1.0"). files maps a path in the image
// ("/testbox", "/etc/weft/x.conf") to its content; every file gets mode
// 0755 and owner 0:0, its parent directories are created. entrypoint is the
// config's Entrypoint. The same inputs give the same bytes.
func WriteImage(tarPath string, tag string, files map[string][]byte, entrypoint []string) error {
	spec := ociimage.Spec{
		Tag:        tag,
		Files:      map[string]ociimage.File{},
		Entrypoint: entrypoint,
		Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
	}
	for p, b := range files {
		spec.Files[p] = ociimage.File{Data: b, Mode: 0o755}
	}
	return ociimage.Write(tarPath, spec)
}
