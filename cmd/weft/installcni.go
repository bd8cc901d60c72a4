package main

// `weft launch --install-cni` writes the CNI plugin and conflist only once
// the peer can serve pods (its /ready says so): the container runtime
// reports the node's network ready as soon as a conflist appears, so
// writing it earlier would let pods be scheduled that weft cannot attach
// yet. The conflist is written in the conf dir and renamed there
// (cni.InstallWith), so the runtime never reads half a file.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/weftmesh/weft/api/client"
	"github.com/weftmesh/weft/cni"
)

// installCNIWhenReady polls the peer's socket until it is ready, then
// installs ic. It gives up when ctx is done.
func installCNIWhenReady(ctx context.Context, ic cni.InstallConfig, log *slog.Logger) error {
	c := client.New(ic.Socket)
	wait := 100 * time.Millisecond
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		rd, err := c.Ready(rctx)
		cancel()
		if err == nil && rd.Ready {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
	if err := cni.InstallWith(ic); err != nil {
		return err
	}
	log.Info("installed the CNI plugin: the node's network is ready", "bin", filepath.Join(ic.BinDir, cni.BinaryName),
		"conflist", filepath.Join(ic.ConfDir, cni.ConflistName))
	return nil
}

// defaultCNIBinary is weft-cni next to this weft binary.
func defaultCNIBinary() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	return filepath.Join(filepath.Dir(exe), cni.BinaryName), nil
}

// removeCNI deletes weft's conflist and plugin binary from the given
// directories; files that are not there are not an error.
func removeCNI(binDir, confDir string) error {
	var errs []error
	for _, p := range []string{filepath.Join(confDir, cni.ConflistName), filepath.Join(binDir, cni.BinaryName)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}
