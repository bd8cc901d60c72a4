package kubebed

// What a cluster is made of besides the Debian packages: the Kubernetes
// binaries, built once per machine by scripts/kube-build.sh into a cache
// outside the checkout, and the two test images, built and packed per
// cluster (seconds with a warm Go build cache).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
)

// moduleRoot is the weft checkout this file is in.
func moduleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// installDeps runs scripts/deps-kube.sh: the Debian packages and crictl
// (milliseconds when everything is there).
func installDeps() error {
	script := filepath.Join(moduleRoot(), "scripts", "deps-kube.sh")
	if out, err := exec.Command("bash", script).CombinedOutput(); err != nil {
		return fmt.Errorf("kubebed: %s: %w\n%s", script, err, tail(string(out), 4000))
	}
	return nil
}

// kubeBinaries returns the directory of the Kubernetes binaries, running
// scripts/kube-build.sh (instant when the cache is complete, 12–25 min
// when it is cold: give go test a -timeout of 30m the first time).
func kubeBinaries(t testing.TB) (string, error) {
	t.Helper()
	script := filepath.Join(moduleRoot(), "scripts", "kube-build.sh")
	start := time.Now()
	cmd := exec.Command("bash", script)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("kubebed: %s: %w", script, err)
	}
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(3 * time.Second):
		t.Logf("kubebed: building Kubernetes %s with %s (12-25 min once; the cache is %s)", K8sVersion, script, cacheDir())
		err = <-done
		t.Logf("kubebed: Kubernetes build took %v", time.Since(start).Round(time.Second))
	}
	if err != nil {
		return "", fmt.Errorf("kubebed: %s: %w\n%s", script, err, tail(stderr.String(), 4000))
	}
	dir := strings.TrimSpace(stdout.String())
	if i := strings.LastIndexByte(dir, '\n'); i >= 0 {
		dir = dir[i+1:]
	}
	for _, b := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return "", fmt.Errorf("kubebed: %s did not provide %s: %w", script, b, err)
		}
	}
	return dir, nil
}

// cacheDir is where scripts/kube-build.sh puts the binaries.
func cacheDir() string {
	if d := os.Getenv("WEFT_K8S_CACHE"); d != "" {
		return d
	}
	return "/var/cache/weft/k8s-" + K8sVersion
}

// buildTestImages builds images/pause and images/testbox (static) and packs
// them into c.PauseTar and c.TestboxTar.
func (c *Cluster) buildTestImages(ctx context.Context) error {
	dir := filepath.Join(c.Dir, "images")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, img := range []struct {
		name, ref string
		tar       *string
	}{{"pause", PauseImage, &c.PauseTar}, {"testbox", TestboxImage, &c.TestboxTar}} {
		bin := filepath.Join(dir, img.name)
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", bin,
			"./test/kubebed/images/"+img.name)
		cmd.Dir = moduleRoot()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %w\n%s", img.name, err, out)
		}
		b, err := os.ReadFile(bin)
		if err != nil {
			return err
		}
		*img.tar = filepath.Join(dir, img.name+".tar")
		if img.name == "testbox" {
			c.TestboxBin = bin
		}
		// /tmp for files a test writes (testbox ping -o)
		files := map[string][]byte{"/" + img.name: b, "/tmp/.keep": nil}
		if err := WriteImage(*img.tar, img.ref, files, []string{"/" + img.name}); err != nil {
			return err
		}
	}
	return nil
}

// lockFile serializes clusters on this machine: two would see each other's
// processes in the kubelets' machine-wide cAdvisor view, race on the real
// values of the shielded sysctls, and double the load on a 2-core machine.
const lockFile = "/run/weft-kubebed.lock"

// lockMachine waits (up to 30 min) for the machine-wide lock and returns
// its release.
func lockMachine(t testing.TB) func() {
	t.Helper()
	f, err := os.OpenFile(lockFile, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatalf("kubebed: lock: %v", err)
	}
	logged := false
	err = testutil.Poll(30*time.Minute, func() error {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if errors.Is(err, syscall.EWOULDBLOCK) && !logged {
			other := "another cluster"
			if b, err := os.ReadFile(stateFile); err == nil {
				var s struct{ Prefix, Dir string }
				if json.Unmarshal(b, &s) == nil && s.Prefix != "" {
					other = fmt.Sprintf("cluster %s (%s)", s.Prefix, s.Dir)
				}
			}
			t.Logf("kubebed: waiting for %s: %s runs on this machine", lockFile, other)
			logged = true
		}
		return err
	})
	if err != nil {
		f.Close()
		t.Fatalf("kubebed: lock %s: %v", lockFile, err)
	}
	return func() { f.Close() }
}
