package cni

// `weft setup-cni`: copy the binary into the runtime's CNI bin directory and
// write the conflist. Both land atomically (temporary file in the target
// directory, fsync, rename), so a runtime scanning the directories never
// executes half a binary or parses half a conflist.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/weftmesh/weft/api/client"
)

// Installed file names.
const (
	BinaryName   = "weft-cni"
	ConflistName = "10-weft.conflist"
)

// InstallConfig says where `weft setup-cni` puts things.
type InstallConfig struct {
	BinSrc  string // path of the weft-cni binary to install
	BinDir  string // the runtime's CNI bin directory
	ConfDir string // the runtime's CNI config directory
	Socket  string // peer socket written into the conflist; "" or the default = omitted
	DataDir string // weft data directory written into the conflist; "" or the default = omitted
}

// DefaultInstallConfig installs into the standard CNI directories.
func DefaultInstallConfig() InstallConfig {
	return InstallConfig{
		BinSrc:  "",                   // path; required
		BinDir:  "/opt/cni/bin",       // directory
		ConfDir: "/etc/cni/net.d",     // directory
		Socket:  client.DefaultSocket, // path
		DataDir: DefaultDataDir,       // path
	}
}

// Validate checks that every path is set and absolute.
func (c InstallConfig) Validate() error {
	for _, f := range []struct{ name, v string }{{"binary", c.BinSrc}, {"bin dir", c.BinDir}, {"conf dir", c.ConfDir}} {
		if f.v == "" {
			return fmt.Errorf("install: %s not set", f.name)
		}
	}
	for _, f := range []struct{ name, v string }{{"socket", c.Socket}, {"data dir", c.DataDir}} {
		if f.v != "" && !filepath.IsAbs(f.v) {
			return fmt.Errorf("install: %s %q is not an absolute path", f.name, f.v)
		}
	}
	return nil
}

// Install copies binSrc to binDir/weft-cni and writes confDir/10-weft.conflist
// with the default socket and data directory.
func Install(binSrc, binDir, confDir string) error {
	c := DefaultInstallConfig()
	c.BinSrc, c.BinDir, c.ConfDir = binSrc, binDir, confDir
	return InstallWith(c)
}

// InstallWith installs as c says.
func InstallWith(c InstallConfig) error {
	if err := c.Validate(); err != nil {
		return err
	}
	src, err := os.Open(c.BinSrc)
	if err != nil {
		return fmt.Errorf("install %s: %w", BinaryName, err)
	}
	defer src.Close()
	if err := writeAtomic(filepath.Join(c.BinDir, BinaryName), 0o755, func(w io.Writer) error {
		_, err := io.Copy(w, src)
		return err
	}); err != nil {
		return fmt.Errorf("install %s: %w", BinaryName, err)
	}
	_, perr := os.Stat(filepath.Join(c.BinDir, "portmap"))
	conf, err := Conflist(c, perr == nil)
	if err != nil {
		return err
	}
	if err := writeAtomic(filepath.Join(c.ConfDir, ConflistName), 0o644, func(w io.Writer) error {
		_, err := w.Write(conf)
		return err
	}); err != nil {
		return fmt.Errorf("write %s: %w", ConflistName, err)
	}
	return nil
}

// Conflist returns the network configuration list: weft-cni, chained with
// the standard portmap plugin (hostPort, with SNAT for hairpin) when
// withPortmap. Version 1.0.0 is what containerd 1.6 and newer accept.
func Conflist(c InstallConfig, withPortmap bool) ([]byte, error) {
	weft := map[string]any{"type": BinaryName}
	if c.Socket != "" && c.Socket != client.DefaultSocket {
		weft["socket"] = c.Socket
	}
	if c.DataDir != "" && c.DataDir != DefaultDataDir {
		weft["dataDir"] = c.DataDir
	}
	plugins := []any{weft}
	if withPortmap {
		plugins = append(plugins, map[string]any{
			"type": "portmap", "capabilities": map[string]bool{"portMappings": true}, "snat": true,
		})
	}
	b, err := json.MarshalIndent(map[string]any{"cniVersion": "1.0.0", "name": "weft", "plugins": plugins}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode conflist: %w", err)
	}
	return append(b, '\n'), nil
}

// writeAtomic writes path through a temporary file in the same directory.
func writeAtomic(path string, mode os.FileMode, fill func(io.Writer) error) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	tmp := f.Name()
	err = fill(f)
	err = errors.Join(err, f.Chmod(mode), f.Sync(), f.Close())
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}
