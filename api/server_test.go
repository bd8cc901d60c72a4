package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/weftmesh/weft/api"
	"github.com/weftmesh/weft/api/apitest"
	"github.com/weftmesh/weft/api/client"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testServer is a running Server on a fresh socket and a loopback port.
type testServer struct {
	srv    *api.Server
	fake   *apitest.Fake
	socket string
	unix   *http.Client
	tcp    *http.Client
	base   string // http://127.0.0.1:PORT
}

func startServer(t *testing.T) *testServer {
	t.Helper()
	// Unix socket paths are limited to 108 bytes; t.TempDir can be longer.
	dir, err := os.MkdirTemp("", "weftapi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := api.DefaultConfig()
	cfg.Socket = filepath.Join(dir, "run", "weft.sock")
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.Version = "0.1.0-test"
	fake := apitest.NewFake()
	srv, err := api.New(cfg, api.All(fake))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	ts := &testServer{
		srv: srv, fake: fake, socket: cfg.Socket,
		unix: &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", cfg.Socket)
			},
			DisableKeepAlives: true,
		}, Timeout: 10 * time.Second},
		tcp:  &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second},
		base: "http://" + srv.HTTPAddr().String(),
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return after cancel")
		}
		if _, err := os.Stat(cfg.Socket); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket %s still exists after Run returned: %v", cfg.Socket, err)
		}
	})
	return ts
}

// do sends method path body over the socket (unix) or TCP and returns the
// status and the body.
func (ts *testServer) do(t *testing.T, overTCP bool, method, path, body string) (int, []byte) {
	t.Helper()
	c, base := ts.unix, "http://weft"
	if overTCP {
		c, base = ts.tcp, ts.base
	}
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp.StatusCode, b
}

func decode[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode %T from %q: %v", v, b, err)
	}
	return v
}

func TestClientRoundTrip(t *testing.T) {
	ts := startServer(t)
	ctx := context.Background()
	c := client.New(ts.socket)

	st, err := c.Status(ctx)
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if st.Name != "h1" || st.ID != apitest.SelfID || len(st.Peers) != 3 || len(st.IPAM.Ranges) != 4 {
		t.Errorf("Status = name %q id %q, %d peers, %d ranges; want h1 %s, 3 peers, 4 ranges", st.Name, st.ID, len(st.Peers), len(st.IPAM.Ranges), apitest.SelfID)
	}
	r, err := c.Ready(ctx)
	if err != nil || !r.Ready {
		t.Errorf("Ready = %+v, %v; want ready", r, err)
	}

	a, err := c.Allocate(ctx, client.AllocateRequest{ID: "ctr-1", IfName: "eth0", Pod: "x.default"})
	if err != nil {
		t.Fatalf("Allocate: %v", err)
	}
	again, err := c.Allocate(ctx, client.AllocateRequest{ID: "ctr-1"})
	if err != nil || again.Address != a.Address {
		t.Errorf("Allocate again = %v, %v; want %s", again, err, a.Address)
	}
	got, err := c.Lookup(ctx, "ctr-1")
	if err != nil {
		t.Fatalf("Lookup: %v", err)
	}
	if diff := cmp.Diff(a, got); diff != "" {
		t.Errorf("Lookup(ctr-1) differs from Allocate (-alloc +lookup):\n%s", diff)
	}
	addr := strings.SplitN(a.Address, "/", 2)[0]
	if err := c.DNSAdd(ctx, client.DNSRequest{Name: "x", Address: addr, ContainerID: "ctr-1"}); err != nil {
		t.Fatalf("DNSAdd: %v", err)
	}
	l, err := c.DNSLookup(ctx, "x.weft.local")
	if err != nil || !cmp.Equal(l.Addresses, []string{addr}) {
		t.Errorf("DNSLookup(x) = %+v, %v; want [%s]", l, err, addr)
	}
	if err := c.Release(ctx, "ctr-1"); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if err := c.Release(ctx, "ctr-1"); err != nil {
		t.Errorf("second Release: %v; want idempotent", err)
	}
	if _, err := c.Lookup(ctx, "ctr-1"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("Lookup after Release: %v; want ErrNotFound", err)
	}
	if _, err := c.DNSLookup(ctx, "x"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("DNSLookup after Release: %v; want ErrNotFound (records go with the container)", err)
	}
	gc, err := c.GC(ctx, []string{"4b1d2c3e5f60718293a4b5c6d7e8f901"})
	if err != nil || !cmp.Equal(gc.Released, []string{"9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b"}) {
		t.Errorf("GC = %+v, %v; want the api pod released", gc, err)
	}

	// The routes the client has no method for.
	var rm client.RmpeerResult
	if err := c.Do(ctx, http.MethodPost, "/rmpeer", client.RmpeerRequest{Name: "h3"}, &rm); err != nil || rm.Reclaimed != 1<<18 {
		t.Errorf("rmpeer h3 = %+v, %v; want 262144 reclaimed", rm, err)
	}
	if err := c.Do(ctx, http.MethodPost, "/connect", client.PeersRequest{Peers: []string{"192.168.50.9"}}, nil); err != nil {
		t.Errorf("connect: %v", err)
	}
	if err := c.Do(ctx, http.MethodPost, "/forget", client.PeersRequest{Peers: []string{"192.168.50.2"}}, nil); err != nil {
		t.Errorf("forget: %v", err)
	}
	if got, want := ts.fake.Targets(), []string{"192.168.50.9"}; !cmp.Equal(got, want) {
		t.Errorf("targets after connect+forget = %v; want %v", got, want)
	}
	if err := c.DNSRemove(ctx, client.DNSRequest{Name: "web"}); err != nil {
		t.Errorf("DNSRemove: %v", err)
	}
	if _, err := c.DNSLookup(ctx, "web"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("DNSLookup(web) after remove: %v; want ErrNotFound", err)
	}
}

func TestReadRoutes(t *testing.T) {
	ts := startServer(t)
	tests := []struct {
		name, path, wantType string
		check                func(t *testing.T, b []byte)
	}{
		{"status", "/status", "application/json", func(t *testing.T, b []byte) {
			st := decode[client.Status](t, b)
			if len(st.Peers) != 3 || st.DNS.Domain != "weft.local." || len(st.Pods) != 2 {
				t.Errorf("status: %d peers, domain %q, %d pods; want 3, weft.local., 2", len(st.Peers), st.DNS.Domain, len(st.Pods))
			}
		}},
		{"peers", "/status/peers", "application/json", func(t *testing.T, b []byte) {
			ps := decode[[]client.Peer](t, b)
			var names []string
			for _, p := range ps {
				names = append(names, p.Name+":"+p.State)
			}
			if want := []string{"h1:alive", "h2:alive", "h3:dead"}; !cmp.Equal(names, want) {
				t.Errorf("peers = %v; want %v", names, want)
			}
		}},
		{"ipam", "/status/ipam", "application/json", func(t *testing.T, b []byte) {
			s := decode[client.IPAMStatus](t, b)
			if s.Range != apitest.Range || s.Owned != 1<<19 || s.Allocated != 3 || s.Free != 1<<19-3 {
				t.Errorf("ipam = %+v; want range %s owned 524288 allocated 3", s, apitest.Range)
			}
		}},
		{"dns", "/status/dns", "application/json", func(t *testing.T, b []byte) {
			if s := decode[client.DNSStatus](t, b); len(s.Entries) != 5 {
				t.Errorf("dns entries = %d; want 5", len(s.Entries))
			}
		}},
		{"ready", "/ready", "application/json", func(t *testing.T, b []byte) {
			if r := decode[client.Ready](t, b); !r.Ready {
				t.Errorf("ready = %+v; want ready", r)
			}
		}},
		{"lookup", "/ip/lookup?id=4b1d2c3e5f60718293a4b5c6d7e8f901", "application/json", func(t *testing.T, b []byte) {
			if a := decode[client.Allocation](t, b); a.Address != "10.32.0.2/12" || a.Gateway != "10.32.0.1" {
				t.Errorf("lookup = %+v; want 10.32.0.2/12 via 10.32.0.1", a)
			}
		}},
		{"dns lookup", "/dns/lookup?name=web", "application/json", func(t *testing.T, b []byte) {
			if l := decode[client.DNSLookup](t, b); !cmp.Equal(l.Addresses, []string{"10.32.0.2"}) {
				t.Errorf("dns lookup = %+v; want [10.32.0.2]", l)
			}
		}},
		{"page", "/", "text/html; charset=utf-8", func(t *testing.T, b []byte) {
			if !bytes.Contains(b, []byte("<html")) {
				t.Errorf("page is not HTML: %.100q", b)
			}
		}},
		{"metrics", "/metrics", "text/plain", func(t *testing.T, b []byte) {
			if !bytes.Contains(b, []byte("weft_peers{")) {
				t.Errorf("metrics lack weft_peers")
			}
		}},
	}
	for _, tc := range tests {
		for _, overTCP := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/tcp=%v", tc.name, overTCP), func(t *testing.T) {
				code, b := ts.do(t, overTCP, http.MethodGet, tc.path, "")
				if code != http.StatusOK {
					t.Fatalf("GET %s = %d %s; want 200", tc.path, code, b)
				}
				tc.check(t, b)
				if code, hb := ts.do(t, overTCP, http.MethodHead, tc.path, ""); code != http.StatusOK || len(hb) != 0 {
					t.Errorf("HEAD %s = %d with %d body bytes; want 200, empty", tc.path, code, len(hb))
				}
			})
		}
	}
}

// postRoutes are every mutating route with a valid body.
var postRoutes = []struct{ path, body string }{
	{"/ip/allocate", `{"id":"tcp-ctr"}`},
	{"/ip/release", `{"id":"4b1d2c3e5f60718293a4b5c6d7e8f901"}`},
	{"/ip/gc", `{"keep":[]}`},
	{"/dns/add", `{"name":"evil","address":"10.32.9.9"}`},
	{"/dns/remove", `{"name":"web"}`},
	{"/connect", `{"peers":["10.0.0.66"]}`},
	{"/forget", `{"peers":["192.168.50.2"]}`},
	{"/rmpeer", `{"name":"h3"}`},
}

func TestTCPIsReadOnly(t *testing.T) {
	ts := startServer(t)
	before, _ := ts.fake.Status(context.Background())
	methods := []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions}
	for _, r := range postRoutes {
		for _, m := range methods {
			t.Run(strings.TrimPrefix(r.path, "/")+"/"+m, func(t *testing.T) {
				code, b := ts.do(t, true, m, r.path, r.body)
				if code != http.StatusForbidden {
					t.Errorf("TCP %s %s = %d %s; want 403", m, r.path, code, b)
				}
			})
		}
	}
	readOnly := []string{"/", "/status", "/status/peers", "/status/ipam", "/status/dns", "/metrics", "/ready", "/ip/lookup?id=x", "/dns/lookup?name=x"}
	for _, p := range readOnly {
		for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
			t.Run("readonly"+p+"/"+m, func(t *testing.T) {
				code, b := ts.do(t, true, m, p, `{"id":"x"}`)
				if code != http.StatusMethodNotAllowed {
					t.Errorf("TCP %s %s = %d %s; want 405", m, p, code, b)
				}
			})
		}
	}
	after, _ := ts.fake.Status(context.Background())
	before.UptimeSeconds, after.UptimeSeconds = 0, 0
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("TCP requests changed the state (-before +after):\n%s", diff)
	}
}

func TestSocketServesMutations(t *testing.T) {
	ts := startServer(t)
	for _, r := range postRoutes {
		t.Run(strings.TrimPrefix(r.path, "/"), func(t *testing.T) {
			if code, b := ts.do(t, false, http.MethodPost, r.path, r.body); code != http.StatusOK {
				t.Errorf("unix POST %s = %d %s; want 200", r.path, code, b)
			}
			if code, _ := ts.do(t, false, http.MethodGet, r.path, ""); code != http.StatusMethodNotAllowed {
				t.Errorf("unix GET %s = %d; want 405", r.path, code)
			}
		})
	}
}

func TestSocketMode(t *testing.T) {
	ts := startServer(t)
	fi, err := os.Stat(ts.socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode = %v; want socket 0600", fi.Mode())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != os.Geteuid() {
		t.Errorf("socket owner = %v; want uid %d (the peer's user)", fi.Sys(), os.Geteuid())
	}
	di, err := os.Stat(filepath.Dir(ts.socket))
	if err != nil || di.Mode().Perm() != 0o755 {
		t.Errorf("socket dir mode = %v, %v; want 0755", di.Mode(), err)
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(ts.socket), ".weft-*"))
	if len(left) != 0 {
		t.Errorf("temporary sockets left: %v", left)
	}
}

func TestBadRequests(t *testing.T) {
	ts := startServer(t)
	tests := []struct {
		name, path, body, wantMsg string
	}{
		{"not json", "/ip/allocate", `id=x`, "not valid JSON"},
		{"truncated", "/ip/allocate", `{"id":`, "request body"},
		{"empty", "/ip/allocate", ``, "empty request body"},
		{"wrong type", "/ip/allocate", `{"id":5}`, `field "id" must be a JSON string`},
		{"trailing", "/ip/release", `{"id":"a"}{"id":"b"}`, "data after the JSON object"},
		{"missing id", "/ip/allocate", `{"ifname":"eth0"}`, `"id" is required`},
		{"dns add no address", "/dns/add", `{"name":"web"}`, `"address" is required`},
		{"dns add bad address", "/dns/add", `{"name":"web","address":"nope"}`, "not an IP address"},
		{"dns remove nothing", "/dns/remove", `{}`, `"name" or "container_id" is required`},
		{"connect nobody", "/connect", `{"peers":[]}`, "at least one"},
		{"rmpeer no name", "/rmpeer", `{"name":" "}`, `"name" is required`},
		{"lookup no id", "/ip/lookup", ``, `"id" is required`},
		{"dns lookup no name", "/dns/lookup", ``, `"name" is required`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			method := http.MethodPost
			if strings.Contains(tc.path, "lookup") {
				method = http.MethodGet
			}
			code, b := ts.do(t, false, method, tc.path, tc.body)
			e := decode[client.Error](t, b)
			if code != http.StatusBadRequest || !strings.Contains(e.Error, tc.wantMsg) {
				t.Errorf("%s %s %.40q = %d %q; want 400 containing %q", method, tc.path, tc.body, code, e.Error, tc.wantMsg)
			}
		})
	}
}

// TestBodyLimit writes an oversized body on a raw connection: the server
// answers and closes while the client is still writing, which an
// http.Client may report as a write error instead of the answer.
func TestBodyLimit(t *testing.T) {
	ts := startServer(t)
	conn, err := net.Dial("unix", ts.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"keep":["` + strings.Repeat("a", 2<<20) + `"]}`
	go func() {
		// Errors are expected once the server stops reading.
		fmt.Fprintf(conn, "POST /ip/gc HTTP/1.1\r\nHost: weft\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	}()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read answer to a 2 MiB body: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if e := decode[client.Error](t, b); resp.StatusCode != http.StatusBadRequest || !strings.Contains(e.Error, "larger than 1048576 bytes") {
		t.Errorf("2 MiB body = %d %q; want 400 larger than 1048576 bytes", resp.StatusCode, e.Error)
	}
}

func TestErrorMapping(t *testing.T) {
	ts := startServer(t)
	tests := []struct {
		name     string
		err      error
		wantCode int
	}{
		{"not found", fmt.Errorf("allocate: %w: gone", api.ErrNotFound), 404},
		{"bad request", fmt.Errorf("allocate: %w: bad", api.ErrBadRequest), 400},
		{"conflict", fmt.Errorf("allocate: %w: busy", api.ErrConflict), 409},
		{"unavailable", fmt.Errorf("allocate: %w: no space, add a peer", api.ErrUnavailable), 503},
		{"deadline", fmt.Errorf("allocate: %w", context.DeadlineExceeded), 503},
		{"other", errors.New("allocate: disk on fire"), 500},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts.fake.SetError("Allocate", tc.err)
			defer ts.fake.SetError("Allocate", nil)
			code, b := ts.do(t, false, http.MethodPost, "/ip/allocate", `{"id":"e"}`)
			if e := decode[client.Error](t, b); code != tc.wantCode || e.Error != tc.err.Error() {
				t.Errorf("allocate with %v = %d %q; want %d with the error's text", tc.err, code, e.Error, tc.wantCode)
			}
		})
	}
	t.Run("unknown path", func(t *testing.T) {
		if code, _ := ts.do(t, false, http.MethodGet, "/nope", ""); code != http.StatusNotFound {
			t.Errorf("GET /nope = %d; want 404", code)
		}
	})
	t.Run("rmpeer live peer", func(t *testing.T) {
		if code, b := ts.do(t, false, http.MethodPost, "/rmpeer", `{"name":"h2"}`); code != http.StatusConflict {
			t.Errorf("rmpeer h2 = %d %s; want 409", code, b)
		}
	})
	t.Run("status error", func(t *testing.T) {
		ts.fake.SetError("Status", fmt.Errorf("status: %w: starting", api.ErrUnavailable))
		defer ts.fake.SetError("Status", nil)
		if code, _ := ts.do(t, true, http.MethodGet, "/status", ""); code != http.StatusServiceUnavailable {
			t.Errorf("GET /status with failing backend = %d; want 503", code)
		}
	})
	t.Run("not ready", func(t *testing.T) {
		ts.fake.SetNotReady("IPAM awaiting consensus")
		defer ts.fake.SetNotReady("")
		r, err := client.New(ts.socket).Ready(context.Background())
		if err != nil || r.Ready || r.Reason != "IPAM awaiting consensus" {
			t.Errorf("Ready = %+v, %v; want not ready with the reason", r, err)
		}
	})
}

func TestSocketTakeover(t *testing.T) {
	dir, err := os.MkdirTemp("", "weftapi")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "weft.sock")
	cfg := api.DefaultConfig()
	cfg.Socket, cfg.HTTPAddr = sock, ""

	// A stale socket (bound, then its listener gone) is replaced.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	s1, err := api.New(cfg, api.All(apitest.NewFake()))
	if err != nil {
		t.Fatalf("New over a stale socket: %v", err)
	}
	// A live one is not.
	if _, err := api.New(cfg, api.All(apitest.NewFake())); !errors.Is(err, api.ErrSocketInUse) {
		t.Errorf("New over a live socket: %v; want ErrSocketInUse", err)
	}
	if err := s1.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	// A regular file is never removed.
	if err := os.WriteFile(sock, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := api.New(cfg, api.All(apitest.NewFake())); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("New over a regular file: %v; want a 'not a socket' error", err)
	}
	if b, _ := os.ReadFile(sock); string(b) != "precious" {
		t.Errorf("regular file at the socket path was changed")
	}
}

func TestConfigValidate(t *testing.T) {
	cfg := api.DefaultConfig()
	cfg.Socket, cfg.HTTPAddr = "", ""
	if _, err := api.New(cfg, api.All(apitest.NewFake())); !errors.Is(err, api.ErrBadRequest) {
		t.Errorf("New with no listener: %v; want ErrBadRequest", err)
	}
	if err := api.DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig().Validate() = %v", err)
	}
}
