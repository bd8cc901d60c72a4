// Package ociimage writes container images without a daemon or a registry:
// one layer of the given files on an empty base, packed as a docker-archive
// tarball (what `docker save` writes, which `docker load` and
// `ctr images import` both accept). The output is reproducible: the layer's
// entries are sorted and carry fixed owners and timestamps, and the config
// has no creation time, so the same inputs give the same image digest.
//
//	err := ociimage.Write("bin/weft-image.tar", ociimage.Spec{
//		Tag:        "docker.io/weftmesh/weft:latest",
//		Files:      map[string]ociimage.File{"usr/local/bin/weft": {Data: b, Mode: 0o755}},
//		Entrypoint: []string{"/usr/local/bin/weft"},
//	})
package ociimage

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// File is one regular file of the image's single layer.
type File struct {
	Data []byte
	Mode int64 // permission bits, e.g. 0o755
}

// Spec describes an image.
type Spec struct {
	// Tag is the image reference, e.g. docker.io/weftmesh/weft:latest. One
	// per tarball: with several, the archive's tag list comes out in map
	// order and the tarball would no longer be reproducible.
	Tag        string
	Files      map[string]File // path inside the image (relative or absolute) -> file
	Entrypoint []string
	Cmd        []string
	Env        []string // KEY=value
	Labels     map[string]string
}

// epoch is every entry's modification time: reproducible builds.
var epoch = time.Unix(0, 0).UTC()

// Image builds the image of s.
func Image(s Spec) (v1.Image, error) {
	layer, err := layerOf(s.Files)
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, fmt.Errorf("image: add layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image: config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = "amd64", "linux"
	cf.Created = v1.Time{Time: epoch}
	cf.Config.Entrypoint = s.Entrypoint
	cf.Config.Cmd = s.Cmd
	cf.Config.Env = s.Env
	cf.Config.Labels = s.Labels
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("image: set config: %w", err)
	}
	return img, nil
}

// Write builds the image of s and writes it to file as a docker-archive
// tarball tagged s.Tag. It writes a temporary file beside file
// and renames it, so a reader never sees half an image.
func Write(file string, s Spec) error {
	if s.Tag == "" {
		return errors.New("image: no tag")
	}
	tag, err := name.NewTag(s.Tag)
	if err != nil {
		return fmt.Errorf("image: tag %q: %w", s.Tag, err)
	}
	img, err := Image(s)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".tmp-")
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tarball.Write(tag, img, tmp); err != nil {
		tmp.Close()
		return fmt.Errorf("image: write %s: %w", file, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("image: write %s: %w", file, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("image: %w", err)
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return fmt.Errorf("image: %w", err)
	}
	return nil
}

// layerOf packs files, with their parent directories, into one layer.
func layerOf(files map[string]File) (v1.Layer, error) {
	if len(files) == 0 {
		return nil, errors.New("image: no files")
	}
	dirs := map[string]bool{}
	names := make([]string, 0, len(files))
	clean := map[string]File{}
	for p, f := range files {
		n := strings.TrimPrefix(path.Clean("/"+p), "/")
		if n == "" || n == "." {
			return nil, fmt.Errorf("image: bad file path %q", p)
		}
		clean[n] = f
		names = append(names, n)
		for d := path.Dir(n); d != "."; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	for d := range dirs {
		names = append(names, d+"/")
	}
	slices.Sort(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		h := &tar.Header{Name: n, ModTime: epoch, Uname: "root", Gname: "root", Format: tar.FormatPAX}
		if strings.HasSuffix(n, "/") {
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
		} else {
			f := clean[n]
			h.Typeflag, h.Mode, h.Size = tar.TypeReg, f.Mode&0o7777, int64(len(f.Data))
			if h.Mode == 0 {
				h.Mode = 0o644
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("image: layer: %w", err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(clean[n].Data); err != nil {
				return nil, fmt.Errorf("image: layer: %w", err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("image: layer: %w", err)
	}
	data := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	})
	if err != nil {
		return nil, fmt.Errorf("image: layer: %w", err)
	}
	return layer, nil
}
