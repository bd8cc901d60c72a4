package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
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

// cfgVersion is the servers' Config.Version; the fake status has its own.
const cfgVersion = "0.0.0-config"

// testServer is a running Server on a fresh socket and a loopback port.
type testServer struct {
	srv    *api.Server
	fakes  *apitest.Fakes
	socket string
	unix   *http.Client
	tcp    *http.Client
	base   string // http://127.0.0.1:PORT
}

// startServer serves every fake.
func startServer(t *testing.T) *testServer {
	return startWith(t, (*apitest.Fakes).Backends)
}

// startWith serves the parts that parts picks; it may also change the
// fakes' canned answers, before the server starts.
func startWith(t *testing.T, parts func(*apitest.Fakes) api.Backends) *testServer {
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
	cfg.Version = cfgVersion
	fakes := apitest.New()
	srv, err := api.New(cfg, parts(fakes))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	ts := &testServer{
		srv: srv, fakes: fakes, socket: cfg.Socket,
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

// send sends method path body over the socket (unix) or TCP and returns
// the answer, its body read.
func (ts *testServer) send(t *testing.T, overTCP bool, method, path, body string) (*http.Response, []byte) {
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
	return resp, b
}

// do is send for the status code and the body.
func (ts *testServer) do(t *testing.T, overTCP bool, method, path, body string) (int, []byte) {
	t.Helper()
	resp, b := ts.send(t, overTCP, method, path, body)
	return resp.StatusCode, b
}

// calls returns the backend calls since the last calls, sorted: the
// metrics collectors call concurrently.
func (ts *testServer) calls() []string {
	c := ts.fakes.Take()
	slices.Sort(c)
	return c
}

func decode[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode %T from %q: %v", v, b, err)
	}
	return v
}

// jsonDiff compares the JSON document got with want encoded, both decoded
// generically, so that null and [] differ.
func jsonDiff(t *testing.T, got []byte, want any) string {
	t.Helper()
	w, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	return cmp.Diff(decode[any](t, w), decode[any](t, got))
}

// apiRoutes is every route with a valid request, the backend part it
// needs and the call it makes with that request.
var apiRoutes = []struct {
	method, path, body string
	part               string // "" = none
	call               string // as the fakes record it; "" = none or several
}{
	{"GET", "/", "", "", ""},
	{"GET", "/metrics", "", "", ""}, // Status and Counters, when there is a Reporter
	{"GET", "/status", "", "Reporter", "Status"},
	{"GET", "/status/peers", "", "Reporter", "Status"},
	{"GET", "/status/ipam", "", "Reporter", "Status"},
	{"GET", "/status/dns", "", "Reporter", "Status"},
	{"GET", "/status/policy", "", "Reporter", "Status"},
	{"GET", "/policy/status", "", "Policies", "PolicyReport"},
	{"GET", "/policy/drops", "", "Policies", "PolicyDrops"},
	{"GET", "/policy/explain?src=x/b&dst=x/a&port=80&protocol=TCP", "", "Policies", "PolicyExplain {Src:x/b Dst:x/a Port:80 Protocol:TCP}"},
	{"GET", "/ready", "", "Reporter", "Ready"},
	{"GET", "/readyz", "", "Reporter", "Ready"},
	{"GET", "/ip/lookup?id=c1", "", "Addresses", "Lookup c1"},
	{"GET", "/dns/lookup?name=web", "", "Names", "DNSLookup web"},
	{"POST", "/ip/allocate", `{"id":"c2","ifname":"eth0"}`, "Addresses", "Allocate {ID:c2 IfName:eth0 Pod: Pool:}"},
	{"POST", "/ip/release", `{"id":"c1"}`, "Addresses", "Release c1"},
	{"POST", "/ip/gc", `{"keep":["c1"]}`, "Addresses", "GC [c1]"},
	{"POST", "/dns/add", `{"name":"evil","address":"10.32.9.9"}`, "Names", "DNSAdd {Name:evil Address:10.32.9.9 ContainerID:}"},
	{"POST", "/dns/remove", `{"container_id":"c1"}`, "Names", "DNSRemove {Name: Address: ContainerID:c1}"},
	{"POST", "/connect", `{"peers":["10.0.0.66"]}`, "Membership", "Connect [10.0.0.66]"},
	{"POST", "/forget", `{"peers":["192.168.50.2"]}`, "Membership", "Forget [192.168.50.2]"},
	{"POST", "/rmpeer", `{"name":"h3"}`, "Membership", "Rmpeer h3"},
	{"POST", "/leave", "", "Membership", "Leave"},
}

// anyOf makes a client method's answer comparable in one table.
func anyOf[T any](v T, err error) (any, error) { return v, err }

func TestClientRoundTrip(t *testing.T) {
	ts := startServer(t)
	f := ts.fakes
	ctx := context.Background()
	c := client.New(ts.socket)
	alloc := func(id string) *client.Allocation { a := f.Addresses.Allocation; a.ID = id; return &a }
	post := func(path string, in, out any) func() (any, error) {
		return func() (any, error) { return out, c.Do(ctx, http.MethodPost, path, in, out) }
	}
	peers := &client.PeersRequest{Peers: []string{"192.168.50.9"}}
	tests := []struct {
		name      string
		do        func() (any, error)
		want      any
		wantCalls []string
	}{
		{"status", func() (any, error) { return anyOf(c.Status(ctx)) }, &f.Reporter.Snapshot, []string{"Status"}},
		{"ready", func() (any, error) { return anyOf(c.Ready(ctx)) }, &client.Ready{Ready: true}, []string{"Ready"}},
		{"allocate", func() (any, error) {
			return anyOf(c.Allocate(ctx, client.AllocateRequest{ID: "ctr-1", IfName: "eth0", Pod: "x.default"}))
		}, alloc("ctr-1"), []string{"Allocate {ID:ctr-1 IfName:eth0 Pod:x.default Pool:}"}},
		{"lookup", func() (any, error) { return anyOf(c.Lookup(ctx, "ctr-1")) }, alloc("ctr-1"), []string{"Lookup ctr-1"}},
		{"release", func() (any, error) { return nil, c.Release(ctx, "ctr-1") }, nil, []string{"Release ctr-1"}},
		{"gc", func() (any, error) { return anyOf(c.GC(ctx, []string{"a", "b"})) },
			&client.GCResult{Released: f.Addresses.Released}, []string{"GC [a b]"}},
		{"dns add", func() (any, error) {
			return nil, c.DNSAdd(ctx, client.DNSRequest{Name: "x", Address: "10.32.0.9", ContainerID: "ctr-1"})
		}, nil, []string{"DNSAdd {Name:x Address:10.32.0.9 ContainerID:ctr-1}"}},
		{"dns remove", func() (any, error) {
			return nil, c.DNSRemove(ctx, client.DNSRequest{Name: "web", Address: "10.32.0.2"})
		}, nil, []string{"DNSRemove {Name:web Address:10.32.0.2 ContainerID:}"}},
		{"dns lookup", func() (any, error) { return anyOf(c.DNSLookup(ctx, "x.weft.local")) },
			&client.DNSLookup{Name: "x.weft.local", Addresses: f.Names.Answer}, []string{"DNSLookup x.weft.local"}},
		// The routes the client has no method for.
		{"rmpeer", post("/rmpeer", client.RmpeerRequest{Name: "h3"}, &client.RmpeerResult{}),
			&client.RmpeerResult{Name: "h3", Reclaimed: f.Membership.Reclaimed}, []string{"Rmpeer h3"}},
		{"connect", post("/connect", peers, &client.PeersRequest{}), peers, []string{"Connect [192.168.50.9]"}},
		{"forget", post("/forget", peers, &client.PeersRequest{}), peers, []string{"Forget [192.168.50.9]"}},
		{"leave", post("/leave", nil, &map[string]bool{}), &map[string]bool{"left": true}, []string{"Leave"}},
		{"policy report", func() (any, error) { return anyOf(c.PolicyReport(ctx)) }, &f.Policies.Report, []string{"PolicyReport"}},
		{"policy drops", func() (any, error) { return anyOf(c.PolicyDrops(ctx)) }, f.Policies.Drops, []string{"PolicyDrops"}},
		{"policy explain", func() (any, error) {
			return anyOf(c.PolicyExplain(ctx, client.ExplainRequest{Src: "y/b", Dst: "10.32.0.2", Port: 81, Protocol: "UDP"}))
		}, nil, []string{"PolicyExplain {Src:y/b Dst:10.32.0.2 Port:81 Protocol:UDP}"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.do()
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if tc.want == nil && got != nil { // checked by the fake's transcript only
				got = nil
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("%s answer differs (-want +got):\n%s", tc.name, diff)
			}
			if got := ts.calls(); !cmp.Equal(got, tc.wantCalls) {
				t.Errorf("%s called %q; want %q", tc.name, got, tc.wantCalls)
			}
		})
	}
}

func TestReadRoutes(t *testing.T) {
	ts := startServer(t)
	snap := ts.fakes.Reporter.Snapshot
	tests := []struct {
		path, wantType string
		want           any    // the JSON answer
		wantIn         string // or a part of a non-JSON answer
		wantCalls      []string
	}{
		{"/status", "application/json", snap, "", []string{"Status"}},
		{"/status/peers", "application/json", snap.Peers, "", []string{"Status"}},
		{"/status/ipam", "application/json", snap.IPAM, "", []string{"Status"}},
		{"/status/dns", "application/json", snap.DNS, "", []string{"Status"}},
		{"/status/policy", "application/json", snap.Policy, "", []string{"Status"}},
		{"/policy/status", "application/json", ts.fakes.Policies.Report, "", []string{"PolicyReport"}},
		{"/policy/drops", "application/json", ts.fakes.Policies.Drops, "", []string{"PolicyDrops"}},
		{"/ready", "application/json", client.Ready{Ready: true}, "", []string{"Ready"}},
		{"/readyz", "text/plain", nil, "ok", []string{"Ready"}},
		{"/ip/lookup?id=4b1d", "application/json", client.Allocation{ID: "4b1d", Address: "10.32.0.2/12", Gateway: "10.32.0.1",
			Bridge: "weft", MTU: 1360, DNS: ts.fakes.Addresses.Allocation.DNS}, "", []string{"Lookup 4b1d"}},
		{"/dns/lookup?name=web", "application/json", client.DNSLookup{Name: "web", Addresses: []string{"10.32.0.2"}}, "", []string{"DNSLookup web"}},
		{"/", "text/html; charset=utf-8", nil, "<html", nil},
		{"/metrics", "text/plain", nil, `weft_peers{state="alive"} 2`, []string{"Counters", "PolicyDropCounts", "Status"}},
	}
	for _, tc := range tests {
		for _, overTCP := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/tcp=%v", tc.path, overTCP), func(t *testing.T) {
				resp, b := ts.send(t, overTCP, http.MethodGet, tc.path, "")
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("GET %s = %d %s; want 200", tc.path, resp.StatusCode, b)
				}
				if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, tc.wantType) {
					t.Errorf("GET %s Content-Type = %q; want %q", tc.path, ct, tc.wantType)
				}
				if tc.want != nil {
					if diff := jsonDiff(t, b, tc.want); diff != "" {
						t.Errorf("GET %s differs (-want +got):\n%s", tc.path, diff)
					}
				} else if !strings.Contains(string(b), tc.wantIn) {
					t.Errorf("GET %s = %.200q; want it to contain %q", tc.path, b, tc.wantIn)
				}
				if got := ts.calls(); !cmp.Equal(got, tc.wantCalls) {
					t.Errorf("GET %s called %q; want %q", tc.path, got, tc.wantCalls)
				}
				if code, hb := ts.do(t, overTCP, http.MethodHead, tc.path, ""); code != http.StatusOK || len(hb) != 0 {
					t.Errorf("HEAD %s = %d with %d body bytes; want 200, empty", tc.path, code, len(hb))
				}
				ts.calls()
			})
		}
	}
}

// TestEmptyAnswers: a backend's nil slices and empty version are sent as
// [] and the server's version, so that scripts can iterate blindly.
func TestEmptyAnswers(t *testing.T) {
	ts := startWith(t, func(f *apitest.Fakes) api.Backends {
		f.Reporter.Snapshot = client.Status{Name: "bare"}
		f.Addresses.Released, f.Names.Answer = nil, nil
		return f.Backends()
	})
	bare := client.Status{Name: "bare", Version: cfgVersion, Peers: []client.Peer{}, Pods: []client.Pod{}, Problems: []string{},
		IPAM: client.IPAMStatus{Owners: []client.IPAMOwner{}, Ranges: []client.IPAMRange{}},
		DNS:  client.DNSStatus{Listen: []string{}, Entries: []client.DNSEntry{}}}
	tests := []struct {
		method, path, body string
		want               any
	}{
		{"GET", "/status", "", bare},
		{"GET", "/status/peers", "", bare.Peers},
		{"GET", "/status/ipam", "", bare.IPAM},
		{"GET", "/status/dns", "", bare.DNS},
		{"GET", "/dns/lookup?name=web", "", client.DNSLookup{Name: "web", Addresses: []string{}}},
		{"POST", "/ip/gc", `{"keep":[]}`, client.GCResult{Released: []string{}}},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			code, b := ts.do(t, false, tc.method, tc.path, tc.body)
			if diff := jsonDiff(t, b, tc.want); code != http.StatusOK || diff != "" {
				t.Errorf("%s %s = %d, differs (-want +got):\n%s", tc.method, tc.path, code, diff)
			}
		})
	}
}

func TestTCPIsReadOnly(t *testing.T) {
	ts := startServer(t)
	methods := []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions}
	for _, r := range apiRoutes {
		if r.method != http.MethodPost {
			continue
		}
		for _, m := range methods {
			t.Run(strings.TrimPrefix(r.path, "/")+"/"+m, func(t *testing.T) {
				if code, b := ts.do(t, true, m, r.path, r.body); code != http.StatusForbidden {
					t.Errorf("TCP %s %s = %d %s; want 403", m, r.path, code, b)
				}
				if got := ts.calls(); got != nil {
					t.Errorf("TCP %s %s called %q; want no backend call", m, r.path, got)
				}
			})
		}
	}
	for _, r := range apiRoutes {
		if r.method != http.MethodGet {
			continue
		}
		for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
			t.Run("readonly"+r.path+"/"+m, func(t *testing.T) {
				if code, b := ts.do(t, true, m, r.path, `{"id":"x"}`); code != http.StatusMethodNotAllowed {
					t.Errorf("TCP %s %s = %d %s; want 405", m, r.path, code, b)
				}
				if got := ts.calls(); got != nil {
					t.Errorf("TCP %s %s called %q; want no backend call", m, r.path, got)
				}
			})
		}
	}
}

func TestSocketServesMutations(t *testing.T) {
	ts := startServer(t)
	for _, r := range apiRoutes {
		if r.method != http.MethodPost {
			continue
		}
		t.Run(strings.TrimPrefix(r.path, "/"), func(t *testing.T) {
			if code, b := ts.do(t, false, http.MethodPost, r.path, r.body); code != http.StatusOK {
				t.Errorf("unix POST %s = %d %s; want 200", r.path, code, b)
			}
			if got := ts.calls(); !cmp.Equal(got, []string{r.call}) {
				t.Errorf("unix POST %s %s called %q; want %q", r.path, r.body, got, r.call)
			}
			if code, _ := ts.do(t, false, http.MethodGet, r.path, ""); code != http.StatusMethodNotAllowed {
				t.Errorf("unix GET %s = %d; want 405", r.path, code)
			}
			if got := ts.calls(); got != nil {
				t.Errorf("unix GET %s called %q; want no backend call", r.path, got)
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

// TestBadRequests: requests the server refuses itself, without calling
// the backend.
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
		{"release no id", "/ip/release", `{}`, `"id" is required`},
		{"gc not a list", "/ip/gc", `{"keep":"a"}`, `field "keep" must be a JSON []string`},
		{"dns add no name", "/dns/add", `{"address":"10.32.0.9"}`, `"name" is required`},
		{"dns add no address", "/dns/add", `{"name":"web"}`, `"address" is required`},
		{"dns remove nothing", "/dns/remove", `{}`, `"name" or "container_id" is required`},
		{"connect nobody", "/connect", `{"peers":[]}`, "at least one"},
		{"forget nobody", "/forget", `{}`, "at least one"},
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
			if got := ts.calls(); got != nil {
				t.Errorf("%s %s %.40q called %q; want no backend call", method, tc.path, tc.body, got)
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
	if got := ts.calls(); got != nil {
		t.Errorf("a 2 MiB body called %q; want no backend call", got)
	}
}

func TestErrorMapping(t *testing.T) {
	ts := startServer(t)
	f := ts.fakes
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
		{"canceled", fmt.Errorf("allocate: %w", context.Canceled), 503},
		{"other", errors.New("allocate: disk on fire"), 500},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f.SetError("Allocate", tc.err)
			defer f.SetError("Allocate", nil)
			code, b := ts.do(t, false, http.MethodPost, "/ip/allocate", `{"id":"e"}`)
			if e := decode[client.Error](t, b); code != tc.wantCode || e.Error != tc.err.Error() {
				t.Errorf("allocate with %v = %d %q; want %d with the error's text", tc.err, code, e.Error, tc.wantCode)
			}
		})
	}
	// Every route answers its backend's error, whichever it is.
	for _, r := range apiRoutes {
		method, _, _ := strings.Cut(r.call, " ")
		if method == "" || method == "Ready" {
			continue
		}
		t.Run("route"+r.path, func(t *testing.T) {
			err := fmt.Errorf("%s: %w: try again", method, api.ErrConflict)
			f.SetError(method, err)
			defer f.SetError(method, nil)
			code, b := ts.do(t, false, r.method, r.path, r.body)
			if e := decode[client.Error](t, b); code != http.StatusConflict || e.Error != err.Error() {
				t.Errorf("%s %s with %s failing = %d %q; want 409 %q", r.method, r.path, method, code, e.Error, err)
			}
		})
	}
	t.Run("unknown path", func(t *testing.T) {
		if code, _ := ts.do(t, false, http.MethodGet, "/nope", ""); code != http.StatusNotFound {
			t.Errorf("GET /nope = %d; want 404", code)
		}
	})
	t.Run("client sentinel", func(t *testing.T) {
		f.SetError("Lookup", fmt.Errorf("lookup x: %w", api.ErrNotFound))
		defer f.SetError("Lookup", nil)
		if _, err := client.New(ts.socket).Lookup(context.Background(), "x"); !errors.Is(err, client.ErrNotFound) {
			t.Errorf("Lookup of a missing ID: %v; want client.ErrNotFound", err)
		}
	})
	t.Run("not ready", func(t *testing.T) {
		f.SetError("Ready", errors.New("IPAM awaiting consensus"))
		defer f.SetError("Ready", nil)
		r, err := client.New(ts.socket).Ready(context.Background())
		if err != nil || r.Ready || r.Reason != "IPAM awaiting consensus" {
			t.Errorf("Ready = %+v, %v; want not ready with the reason", r, err)
		}
	})
}

// TestMissingBackend: a server without a part answers its routes 503,
// naming the part, and serves the others.
func TestMissingBackend(t *testing.T) {
	for _, part := range []string{"Reporter", "Addresses", "Names", "Membership"} {
		t.Run(part, func(t *testing.T) {
			ts := startWith(t, func(f *apitest.Fakes) api.Backends {
				b := f.Backends()
				switch part {
				case "Reporter":
					b.Reporter = nil
				case "Addresses":
					b.Addresses = nil
				case "Names":
					b.Names = nil
				case "Membership":
					b.Membership = nil
				}
				return b
			})
			for _, r := range apiRoutes {
				code, b := ts.do(t, false, r.method, r.path, r.body)
				calls := ts.calls()
				if r.part != part {
					if code != http.StatusOK {
						t.Errorf("%s %s without %s = %d %s; want 200", r.method, r.path, part, code, b)
					}
					continue
				}
				want := "this API server has no " + part + " backend"
				if e := decode[client.Error](t, b); code != http.StatusServiceUnavailable || !strings.Contains(e.Error, want) {
					t.Errorf("%s %s without %s = %d %q; want 503 containing %q", r.method, r.path, part, code, e.Error, want)
				}
				if calls != nil {
					t.Errorf("%s %s without %s called %q", r.method, r.path, part, calls)
				}
			}
		})
	}
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
	b := apitest.New().Backends()

	// A stale socket (bound, then its listener gone) is replaced.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	s1, err := api.New(cfg, b)
	if err != nil {
		t.Fatalf("New over a stale socket: %v", err)
	}
	// A live one is not.
	if _, err := api.New(cfg, b); !errors.Is(err, api.ErrSocketInUse) {
		t.Errorf("New over a live socket: %v; want ErrSocketInUse", err)
	}
	if err := s1.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	// A regular file is never removed.
	if err := os.WriteFile(sock, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := api.New(cfg, b); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("New over a regular file: %v; want a 'not a socket' error", err)
	}
	if b, _ := os.ReadFile(sock); string(b) != "precious" {
		t.Errorf("regular file at the socket path was changed")
	}
}

func TestConfigValidate(t *testing.T) {
	noListener := api.DefaultConfig()
	noListener.Socket, noListener.HTTPAddr = "", ""
	tcpOnly := api.DefaultConfig()
	tcpOnly.Socket, tcpOnly.HTTPAddr = "", "127.0.0.1:0"
	tests := []struct {
		name string
		cfg  api.Config
		b    api.Backends
	}{
		{"no listener", noListener, apitest.New().Backends()},
		{"no backends", tcpOnly, api.Backends{}},
	}
	for _, tc := range tests {
		if srv, err := api.New(tc.cfg, tc.b); !errors.Is(err, api.ErrBadRequest) {
			t.Errorf("New with %s: %v; want ErrBadRequest", tc.name, err)
			if srv != nil {
				srv.Close()
			}
		}
	}
	if err := api.DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig().Validate() = %v", err)
	}
}

// TestReadyzNotReady: a probe that reads only the status code sees 503,
// and the body says why.
func TestReadyzNotReady(t *testing.T) {
	ts := startServer(t)
	ts.fakes.Reporter.SetError("Ready", errors.New("awaiting consensus (known 1 of quorum 3)"))
	resp, b := ts.send(t, true, http.MethodGet, "/readyz", "")
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(b), "awaiting consensus") {
		t.Fatalf("GET /readyz = %d %q; want 503 with the reason", resp.StatusCode, b)
	}
}
