package wg

import (
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

// seqTUN is a tun.Device over one end of a SOCK_SEQPACKET socketpair: one
// packet per read, like a TUN without offloads, and a pollable descriptor.
type seqTUN struct {
	f *os.File
}

func (s *seqTUN) File() *os.File           { return s.f }
func (s *seqTUN) MTU() (int, error)        { return 1420, nil }
func (s *seqTUN) Name() (string, error)    { return "seq", nil }
func (s *seqTUN) Events() <-chan tun.Event { return nil }
func (s *seqTUN) Close() error             { return s.f.Close() }
func (s *seqTUN) BatchSize() int           { return 8 }
func (s *seqTUN) Write(bufs [][]byte, offset int) (int, error) {
	return 0, errors.New("not written in tests")
}
func (s *seqTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := s.f.Read(bufs[0][offset:])
	if err != nil {
		return 0, err
	}
	sizes[0] = n
	return 1, nil
}

// newSeqTUN returns the device and the peer end packets are written to.
func newSeqTUN(t *testing.T) (*seqTUN, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	t.Cleanup(func() { unix.Close(fds[1]) })
	return &seqTUN{f: os.NewFile(uintptr(fds[0]), "seq")}, fds[1]
}

func TestBatchTUNRead(t *testing.T) {
	const offset = 16
	tests := []struct {
		name   string
		queued int   // packets written before the first Read
		batch  int   // caller's batch size
		reads  []int // packets returned by each Read
	}{
		{name: "one packet", queued: 1, batch: 8, reads: []int{1}},
		{name: "drains all queued", queued: 5, batch: 8, reads: []int{5}},
		{name: "fills the batch, keeps the rest in order", queued: 19, batch: 8, reads: []int{8, 8, 3}},
		{name: "exactly one batch", queued: 8, batch: 8, reads: []int{8}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			inner, peer := newSeqTUN(t)
			dev, err := newBatchTUN(inner)
			if err != nil {
				t.Fatal(err)
			}
			defer dev.Close()
			for i := range tc.queued {
				if _, err := unix.Write(peer, []byte(fmt.Sprintf("packet-%03d", i))); err != nil {
					t.Fatal(err)
				}
			}
			bufs := make([][]byte, tc.batch)
			for i := range bufs {
				bufs[i] = make([]byte, 2048)
			}
			sizes := make([]int, tc.batch)
			var got, want []string
			var counts []int
			for range tc.reads {
				n, err := dev.Read(bufs, sizes, offset)
				if err != nil {
					t.Fatalf("Read: %v", err)
				}
				counts = append(counts, n)
				for i := range n {
					got = append(got, string(bufs[i][offset:offset+sizes[i]]))
				}
			}
			for i := range tc.queued {
				want = append(want, fmt.Sprintf("packet-%03d", i))
			}
			if d := cmp.Diff(tc.reads, counts); d != "" {
				t.Errorf("packets per Read (-want +got):\n%s", d)
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("packets (-want +got):\n%s", d)
			}
		})
	}
}

// A follow-up read's error is not lost: it comes back on the next Read,
// after the packets already read.
func TestBatchTUNDeferredError(t *testing.T) {
	inner, peer := newSeqTUN(t)
	dev, err := newBatchTUN(inner)
	if err != nil {
		t.Fatal(err)
	}
	unix.Write(peer, []byte("only"))
	unix.Shutdown(peer, unix.SHUT_WR) // then EOF: readable, Read fails
	bufs := [][]byte{make([]byte, 64), make([]byte, 64)}
	sizes := make([]int, 2)
	n, err := dev.Read(bufs, sizes, 0)
	if n != 1 || err != nil || string(bufs[0][:sizes[0]]) != "only" {
		t.Fatalf("first Read = %d, %v (%q); want 1 packet, nil", n, err, bufs[0][:sizes[0]])
	}
	inner.Close()
	if n, err := dev.Read(bufs, sizes, 0); err == nil {
		t.Fatalf("second Read = %d, nil; want the deferred error", n)
	}
}
