package ociimage

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// TestWriteReadBack: the tarball loads back as the image that was asked
// for (tags, entrypoint, the files with their modes), and writing the same
// spec twice gives the same digest.
func TestWriteReadBack(t *testing.T) {
	spec := Spec{
		Tag:        "docker.io/weftmesh/weft:test",
		Files:      map[string]File{"/usr/local/bin/weft": {Data: []byte("#!weft"), Mode: 0o755}, "etc/weft/note": {Data: []byte("hi")}},
		Entrypoint: []string{"/usr/local/bin/weft"},
		Env:        []string{"PATH=/usr/local/bin"},
	}
	dir := t.TempDir()
	var digests []string
	for _, f := range []string{"a.tar", "b.tar"} {
		if err := Write(filepath.Join(dir, f), spec); err != nil {
			t.Fatal(err)
		}
		ref := spec.Tag
		tag, err := name.NewTag(ref)
		if err != nil {
			t.Fatal(err)
		}
		img, err := tarball.ImageFromPath(filepath.Join(dir, f), &tag)
		if err != nil {
			t.Fatalf("load %s from %s: %v", ref, f, err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, d.String())
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(cf.Config.Entrypoint, spec.Entrypoint) || cf.OS != "linux" || cf.Architecture != "amd64" {
			t.Errorf("config: entrypoint %q os %s arch %s", cf.Config.Entrypoint, cf.OS, cf.Architecture)
		}
		got := map[string]int64{}
		rc := mutate.Extract(img)
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			got[h.Name] = h.Mode
		}
		rc.Close()
		if got["usr/local/bin/weft"] != 0o755 || got["etc/weft/note"] != 0o644 {
			t.Errorf("layer entries = %v", got)
		}
	}
	for _, d := range digests[1:] {
		if d != digests[0] {
			t.Fatalf("digests differ: %v (not reproducible)", digests)
		}
	}
	a, errA := os.ReadFile(filepath.Join(dir, "a.tar"))
	b, errB := os.ReadFile(filepath.Join(dir, "b.tar"))
	if errA != nil || errB != nil || !bytes.Equal(a, b) {
		t.Fatalf("the two tarballs differ (%d and %d bytes; %v %v): not reproducible", len(a), len(b), errA, errB)
	}
}

func TestWriteRejects(t *testing.T) {
	dir := t.TempDir()
	for _, s := range []Spec{
		{Files: map[string]File{"a": {}}},
		{Tag: "Not A Tag!", Files: map[string]File{"a": {}}},
		{Tag: "x:1"},
		{Tag: "x:1", Files: map[string]File{"/": {}}},
	} {
		if err := Write(filepath.Join(dir, "x.tar"), s); err == nil {
			t.Errorf("Write(%+v) = nil; want an error", s)
		}
	}
}
