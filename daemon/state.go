package daemon

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/weftmesh/weft/peer"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// The state directory holds, each file 0600:
//
//	identity.json  name, 64-bit ID, WireGuard private key (created on first start)
//	secret         the cluster secret (created by the first peer, or given)
//	targets.json   the PEER list and `weft connect` additions, plus the
//	               addresses of peers last seen, so a restart needs no PEERs
//	ipam.db        the ring and allocations (bbolt, owned by ipam)

// Identity is this peer's persistent identity.
type Identity struct {
	Name         string  `json:"name"`
	ID           peer.ID `json:"id"`
	WGPrivateKey string  `json:"wg_private_key"`
}

// WGPublicKey derives the public key.
func (id Identity) WGPublicKey() (string, error) {
	k, err := wgtypes.ParseKey(id.WGPrivateKey)
	if err != nil {
		return "", fmt.Errorf("parse WireGuard private key: %w", err)
	}
	return k.PublicKey().String(), nil
}

// loadIdentity reads the identity from dir, creating it on first start.
// A name given on the command line that differs from the stored one wins
// (the ID and keys stay).
func loadIdentity(dir, name string) (Identity, bool, error) {
	path := filepath.Join(dir, "identity.json")
	var id Identity
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &id); err != nil {
			return id, false, fmt.Errorf("read identity %s: %w (remove the file to start as a new peer)", path, err)
		}
		if id.ID == 0 || id.WGPrivateKey == "" {
			return id, false, fmt.Errorf("read identity %s: incomplete (remove the file to start as a new peer)", path)
		}
		if name != "" && name != id.Name {
			id.Name = name
			return id, false, writeJSON(path, id)
		}
		return id, false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return id, false, fmt.Errorf("read identity: %w", err)
	}
	var raw [8]byte
	for id.ID == 0 {
		if _, err := rand.Read(raw[:]); err != nil {
			return id, false, fmt.Errorf("new peer ID: %w", err)
		}
		id.ID = peer.ID(binary.BigEndian.Uint64(raw[:]))
	}
	key, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return id, false, fmt.Errorf("new WireGuard key: %w", err)
	}
	id.WGPrivateKey = key.String()
	id.Name = name
	if id.Name == "" {
		if id.Name, err = os.Hostname(); err != nil {
			return id, false, fmt.Errorf("peer name from hostname: %w (pass --name)", err)
		}
	}
	return id, true, writeJSON(path, id)
}

// targetsFile is what targets.json holds.
type targetsFile struct {
	Targets []string `json:"targets"` // PEER arguments and `weft connect`
	Seen    []string `json:"seen"`    // gossip addresses of peers last seen alive
}

func loadTargets(dir string) (targetsFile, error) {
	var t targetsFile
	b, err := os.ReadFile(filepath.Join(dir, "targets.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return t, nil
	}
	if err != nil {
		return t, fmt.Errorf("read targets: %w", err)
	}
	if err := json.Unmarshal(b, &t); err != nil {
		return t, fmt.Errorf("read targets: %w", err)
	}
	return t, nil
}

func saveTargets(dir string, t targetsFile) error {
	return writeJSON(filepath.Join(dir, "targets.json"), t)
}

// readSecretFile reads a password file; surrounding whitespace is ignored.
func readSecretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read password file: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("password file %s is empty", path)
	}
	return s, nil
}

// writeJSON writes v atomically with mode 0600.
// writeJSON writes v compact (owners.json holds an entry per ring owner
// and is rewritten as owners change: indenting it cost more than the
// rest of the write at hundreds of peers).
func writeJSON(path string, v any) error {
	// An Encoder, not Marshal: its buffer is pooled. The owner table is
	// written at every ring change, ~200 KB at 1,000 peers.
	return writeAtomic(path, func(f *os.File) error {
		if err := json.NewEncoder(f).Encode(v); err != nil {
			return fmt.Errorf("encode: %w", err)
		}
		return nil
	})
}

func writeFileAtomic(path string, b []byte) error {
	return writeAtomic(path, func(f *os.File) error {
		_, err := f.Write(b)
		return err
	})
}

// writeAtomic writes path by write into a temporary file renamed over it,
// so that a reader or a crash sees the old content or the new, whole.
func writeAtomic(path string, write func(*os.File) error) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	err = write(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
