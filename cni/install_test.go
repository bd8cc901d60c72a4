package cni

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func readFile(p string) ([]byte, error) { return os.ReadFile(p) }

func TestInstall(t *testing.T) {
	tests := []struct {
		name    string
		portmap bool
		socket  string
		want    string
	}{
		{name: "plain", want: `{"cniVersion":"1.0.0","name":"weft","plugins":[{"type":"weft-cni"}]}`},
		{name: "portmap", portmap: true, want: `{"cniVersion":"1.0.0","name":"weft","plugins":[{"type":"weft-cni"},{"capabilities":{"portMappings":true},"snat":true,"type":"portmap"}]}`},
		{name: "socket", socket: "/run/h1/weft.sock", want: `{"cniVersion":"1.0.0","name":"weft","plugins":[{"socket":"/run/h1/weft.sock","type":"weft-cni"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			src := filepath.Join(root, "src-weft-cni")
			if err := os.WriteFile(src, []byte("#!/bin/sh\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			binDir, confDir := filepath.Join(root, "bin"), filepath.Join(root, "net.d")
			if tt.portmap {
				_ = os.MkdirAll(binDir, 0o755)
				_ = os.WriteFile(filepath.Join(binDir, "portmap"), nil, 0o755)
			}
			c := DefaultInstallConfig()
			c.BinSrc, c.BinDir, c.ConfDir = src, binDir, confDir
			if tt.socket != "" {
				c.Socket = tt.socket
			}
			for range 2 { // idempotent
				if err := InstallWith(c); err != nil {
					t.Fatalf("InstallWith = %v", err)
				}
			}
			st, err := os.Stat(filepath.Join(binDir, BinaryName))
			if err != nil || st.Mode().Perm() != 0o755 {
				t.Fatalf("installed binary: %v, %v; want mode 0755", st, err)
			}
			got, err := os.ReadFile(filepath.Join(confDir, ConflistName))
			if err != nil {
				t.Fatal(err)
			}
			var g, w any
			if err := json.Unmarshal(got, &g); err != nil {
				t.Fatalf("conflist %s: %v", got, err)
			}
			_ = json.Unmarshal([]byte(tt.want), &w)
			if diff := cmp.Diff(w, g); diff != "" {
				t.Errorf("conflist (-want +got):\n%s", diff)
			}
			ents, _ := os.ReadDir(confDir)
			if len(ents) != 1 {
				t.Errorf("conf dir has %d entries; want only the conflist (no temp files)", len(ents))
			}
		})
	}
	if err := Install(filepath.Join(t.TempDir(), "missing"), t.TempDir(), t.TempDir()); err == nil {
		t.Error("Install(missing binary) = nil; want error")
	}
}
