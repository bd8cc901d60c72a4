package testbed

// The pause image for the runtime tests, made here (no registry): the
// static stand-in for the Kubernetes pause binary that the real-cluster
// harness uses too (test/kubebed/images/pause), packed by internal/ociimage
// as the tarball `ctr images import` reads.

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/weftmesh/weft/internal/ociimage"
)

// pauseImage is the sandbox image name the runtimes are configured with.
const pauseImage = "localhost/weft-test/pause:1.0"

// buildPauseImage builds the pause binary and image tarball in dir and
// returns the tarball's path.
func buildPauseImage(t testing.TB, dir string) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	bin := filepath.Join(dir, "pause")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./test/kubebed/images/pause")
	cmd.Dir = filepath.Join(filepath.Dir(file), "..", "..")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build pause: %v\n%s", err, out)
	}
	exe, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "pause.tar")
	if err := ociimage.Write(out, ociimage.Spec{Tag: pauseImage,
		Files: map[string]ociimage.File{"pause": {Data: exe, Mode: 0o755}}, Entrypoint: []string{"/pause"}}); err != nil {
		t.Fatal(err)
	}
	return out
}
