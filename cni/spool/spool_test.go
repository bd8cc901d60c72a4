package spool

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestWriteListRemove(t *testing.T) {
	dir := Dir(t.TempDir())
	ids := []string{"b0281865c53221ef", "abc:net1", "../../etc/passwd", ".hidden", "with space", "ü"}
	for _, id := range ids {
		if err := Write(dir, id); err != nil {
			t.Fatalf("Write(%q) = %v", id, err)
		}
	}
	if err := Write(dir, ids[0]); err != nil { // twice is fine
		t.Fatalf("Write(%q) again = %v", ids[0], err)
	}
	got, err := List(dir)
	if err != nil {
		t.Fatalf("List = %v", err)
	}
	want := append([]string(nil), ids...)
	slices.Sort(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("List (-want +got):\n%s", diff)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") || strings.Contains(e.Name(), "/") {
			t.Errorf("file name %q escapes the spool", e.Name())
		}
	}
	for _, id := range ids {
		if err := Remove(dir, id); err != nil {
			t.Fatalf("Remove(%q) = %v", id, err)
		}
	}
	if err := Remove(dir, ids[0]); err != nil {
		t.Fatalf("Remove(%q) twice = %v", ids[0], err)
	}
	if got, _ := List(dir); len(got) != 0 {
		t.Fatalf("List after Remove = %v; want empty", got)
	}
}

func TestListMissingDirAndJunk(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nope")
	if got, err := List(dir); err != nil || got != nil {
		t.Fatalf("List(missing) = %v, %v; want nil, nil", got, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{".tmp-123", "bad%zz", "trunc%4"} {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := List(dir); err != nil || len(got) != 0 {
		t.Fatalf("List(junk) = %v, %v; want empty", got, err)
	}
}

func TestBadID(t *testing.T) {
	dir := t.TempDir()
	for _, id := range []string{"", strings.Repeat("x", 300)} {
		if err := Write(dir, id); err == nil {
			t.Errorf("Write(%d bytes) = nil; want ErrBadID", len(id))
		}
	}
}

func FuzzEscape(f *testing.F) {
	for _, s := range []string{"a", "..", "a/b", "%41", "x:eth1", "\x00\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		n := escape(id)
		if strings.ContainsAny(n, "/.") || n == "" && id != "" {
			t.Fatalf("escape(%q) = %q", id, n)
		}
		if back, ok := unescape(n); id != "" && (!ok || back != id) {
			t.Fatalf("unescape(escape(%q)) = %q, %v", id, back, ok)
		}
	})
}
