package cni

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"syscall"
	"testing"

	"github.com/weftmesh/weft/api/client"
)

func TestPeerDiedDuring(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&url.Error{Op: "Post", URL: "http://weft/ip/release", Err: &net.OpError{Op: "read", Net: "unix", Err: os.NewSyscallError("read", syscall.ECONNRESET)}}, true},
		{fmt.Errorf("POST /ip/release: %w", &url.Error{Op: "Post", URL: "http://weft/ip/release", Err: io.EOF}), true},
		{fmt.Errorf("read answer: %w", io.ErrUnexpectedEOF), true},
		{errors.New("bad request"), false},
		{fmt.Errorf("%w: x", client.ErrNotFound), false},
	} {
		if got := peerDiedDuring(tc.err); got != tc.want {
			t.Errorf("peerDiedDuring(%v) = %v; want %v", tc.err, got, tc.want)
		}
	}
}
