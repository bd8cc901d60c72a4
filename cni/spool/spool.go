// Package spool records allocation releases that could not reach the weft
// peer because it was not running, so the peer applies them when it starts
// and no address leaks. One file per allocation ID in a directory (by
// default /var/lib/weft/pending-release), written atomically. Standard
// library only: the CNI plugin writes the spool, the daemon drains it.
//
//	dir := spool.Dir("/var/lib/weft")
//	_ = spool.Write(dir, "0123abcd")     // weft-cni DEL, peer down
//	ids, _ := spool.List(dir)            // daemon start
//	for _, id := range ids { release(id); _ = spool.Remove(dir, id) }
package spool

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Subdir is the spool's directory name inside weft's data directory.
const Subdir = "pending-release"

// maxName keeps a file name under the usual 255-byte limit.
const maxName = 240

var (
	// ErrBadID is an ID that cannot be spooled (empty or too long).
	ErrBadID = errors.New("bad allocation ID")
)

// Dir returns the spool directory inside dataDir.
func Dir(dataDir string) string { return filepath.Join(dataDir, Subdir) }

// Write records id as pending release. The file appears complete or not at
// all (temporary file, fsync, rename); writing the same id twice is fine.
func Write(dir, id string) error {
	name, err := fileName(id)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("spool %s: %w", id, err)
	}
	f, err := os.CreateTemp(dir, ".tmp-")
	if err != nil {
		return fmt.Errorf("spool %s: %w", id, err)
	}
	tmp := f.Name()
	_, werr := f.WriteString(id + "\n")
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp, filepath.Join(dir, name))
	}
	if werr != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("spool %s: %w", id, werr)
	}
	if d, err := os.Open(dir); err == nil { // make the rename durable
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// List returns the pending IDs, sorted. A missing directory is empty.
func List(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list spool %s: %w", dir, err)
	}
	var ids []string
	for _, e := range ents {
		if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		id, ok := unescape(e.Name())
		if !ok {
			continue
		}
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids, nil
}

// Remove drops id from the spool; a missing entry is fine.
func Remove(dir, id string) error {
	name, err := fileName(id)
	if err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("unspool %s: %w", id, err)
	}
	return nil
}

func fileName(id string) (string, error) {
	if id == "" {
		return "", fmt.Errorf("%w: empty", ErrBadID)
	}
	n := escape(id)
	if len(n) > maxName {
		return "", fmt.Errorf("%w: %d bytes is too long", ErrBadID, len(id))
	}
	return n, nil
}

// escape keeps [A-Za-z0-9_:-] and writes every other byte as %XX, so a name
// is never ".", "..", hidden, or a path.
func escape(id string) string {
	const hexd = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '-', c == ':':
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hexd[c>>4])
			b.WriteByte(hexd[c&15])
		}
	}
	return b.String()
}

func unescape(name string) (string, bool) {
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c != '%' {
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(name) {
			return "", false
		}
		hi, ok1 := unhex(name[i+1])
		lo, ok2 := unhex(name[i+2])
		if !ok1 || !ok2 {
			return "", false
		}
		b.WriteByte(hi<<4 | lo)
		i += 2
	}
	return b.String(), b.Len() > 0
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
