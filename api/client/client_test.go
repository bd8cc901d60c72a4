package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// serve answers on a unix socket in a temporary directory with h.
func serve(t *testing.T, h http.HandlerFunc) *Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "weft.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return New(sock)
}

// TestPeerGone: a peer that dies while it serves a request (the
// connection closed before the answer, or in the middle of it) is
// ErrPeerGone; one that is not there is ErrNotRunning; an answer is
// neither.
func TestPeerGone(t *testing.T) {
	ctx := context.Background()
	cut := func(w http.ResponseWriter, r *http.Request) {
		c, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			c.Close()
		}
	}
	half := func(w http.ResponseWriter, r *http.Request) {
		c, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		fmt.Fprint(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"released\":")
		c.Close()
	}
	for name, h := range map[string]http.HandlerFunc{"closed before the answer": cut, "closed mid-answer": half} {
		err := serve(t, h).Do(ctx, http.MethodPost, "/ip/release", map[string]string{"id": "x"}, &struct{}{})
		if !errors.Is(err, ErrPeerGone) || errors.Is(err, ErrNotRunning) {
			t.Errorf("%s: %v; want ErrPeerGone", name, err)
		}
	}

	err := New(filepath.Join(t.TempDir(), "none.sock")).Do(ctx, http.MethodPost, "/ip/release", nil, nil)
	if !errors.Is(err, ErrNotRunning) || errors.Is(err, ErrPeerGone) {
		t.Errorf("no peer: %v; want ErrNotRunning", err)
	}
	err = serve(t, http.NotFound).Do(ctx, http.MethodPost, "/ip/release", nil, nil)
	if !errors.Is(err, ErrNotFound) || errors.Is(err, ErrPeerGone) {
		t.Errorf("404: %v; want ErrNotFound", err)
	}
	err = serve(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("{}")) }).Do(ctx, http.MethodPost, "/ip/release", nil, &struct{}{})
	if err != nil {
		t.Errorf("answer: %v", err)
	}
}

// TestIsCut: a reset (as the kernel reports it through net and url
// errors) and an EOF are cuts; other errors are not.
func TestIsCut(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&url.Error{Op: "Post", URL: "http://weft/ip/release", Err: &net.OpError{Op: "read", Net: "unix", Err: os.NewSyscallError("read", syscall.ECONNRESET)}}, true},
		{&url.Error{Op: "Post", URL: "http://weft/ip/release", Err: errors.New("EOF wrapped: " + "x")}, false},
		{fmt.Errorf("read: %w", errors.Join(errors.New("x"), syscall.ECONNRESET)), true},
		{context.DeadlineExceeded, false},
		{errors.New("bad request"), false},
	} {
		if got := isCut(tc.err); got != tc.want {
			t.Errorf("isCut(%v) = %v; want %v", tc.err, got, tc.want)
		}
	}
}
