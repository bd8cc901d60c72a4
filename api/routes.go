package api

// Request pipeline: router.ServeHTTP finds the route by exact path, refuses
// what the listener does not serve (403 for mutating paths over TCP, 405 for
// a wrong method), decodes the JSON body (at most 1 MiB), calls the one
// backend part the route uses (503 when the server has none), and writes
// JSON; errors are client.Error bodies whose status comes from the
// backend's sentinel.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/weftmesh/weft/api/client"
)

const maxBody = 1 << 20 // bytes of a request body

// route is one API endpoint.
type route struct {
	method string // GET routes also answer HEAD
	// mutating routes are served on the control socket only.
	mutating bool
	// cniOp names the operation in the CNI request metrics; "" = not counted.
	cniOp  string
	handle handlerFunc
}

// handlerFunc serves one request; a returned error becomes a client.Error
// answer whose status comes from its sentinel (errorStatus).
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// handler serves one request with the one backend part B it uses.
type handler[B any] func(b B, w http.ResponseWriter, r *http.Request) error

// bind gives h its part b, or, when the server has no such part, answers
// every request with ErrUnavailable (503) naming the missing part.
func bind[B any](b B, part string, h handler[B]) handlerFunc {
	if any(b) == nil {
		return func(w http.ResponseWriter, r *http.Request) error {
			return fmt.Errorf("%s: %w: this API server has no %s backend", r.URL.Path, ErrUnavailable, part)
		}
	}
	return func(w http.ResponseWriter, r *http.Request) error { return h(b, w, r) }
}

// routes is the API over the server's backends, each handler bound to the
// part it uses. It is built per listener, not kept in a package variable,
// so the table stays immutable.
func (s *Server) routes() map[string]route {
	b, version := s.backends, s.cfg.Version
	get := func(h handlerFunc) route {
		return route{method: http.MethodGet, handle: h}
	}
	post := func(op string, h handlerFunc) route {
		return route{method: http.MethodPost, mutating: true, cniOp: op, handle: h}
	}
	status := func(part func(*client.Status) any) handlerFunc {
		return bind(b.Reporter, "Reporter", handleStatus(version, part))
	}
	ips := func(h handler[Addresses]) handlerFunc { return bind(b.Addresses, "Addresses", h) }
	dns := func(h handler[Names]) handlerFunc { return bind(b.Names, "Names", h) }
	mesh := func(h handler[Membership]) handlerFunc { return bind(b.Membership, "Membership", h) }
	pol := func(h handler[Policies]) handlerFunc { return bind(b.Policies, "Policies", h) }
	return map[string]route{
		"/":               get(handlePage),
		"/status":         get(status(func(st *client.Status) any { return st })),
		"/status/peers":   get(status(func(st *client.Status) any { return st.Peers })),
		"/status/ipam":    get(status(func(st *client.Status) any { return st.IPAM })),
		"/status/dns":     get(status(func(st *client.Status) any { return st.DNS })),
		"/status/policy":  get(status(func(st *client.Status) any { return st.Policy })),
		"/policy/status":  get(pol(handlePolicyReport)),
		"/policy/drops":   get(pol(handlePolicyDrops)),
		"/policy/explain": get(pol(handlePolicyExplain)),
		"/ready":          get(bind(b.Reporter, "Reporter", handleReady)),
		"/readyz":         get(bind(b.Reporter, "Reporter", handleReadyz)),
		"/ip/lookup":      get(ips(handleLookup)),
		"/dns/lookup":     get(dns(handleDNSLookup)),
		"/metrics":        get(s.metrics.serve),
		"/ip/allocate":    post("allocate", ips(handleAllocate)),
		"/ip/release":     post("release", ips(handleRelease)),
		"/ip/gc":          post("gc", ips(handleGC)),
		"/dns/add":        post("dns_add", dns(handleDNSAdd)),
		"/dns/remove":     post("dns_remove", dns(handleDNSRemove)),
		"/connect":        post("", mesh(handleConnect)),
		"/forget":         post("", mesh(handleForget)),
		"/rmpeer":         post("", mesh(handleRmpeer)),
		"/leave":          post("", mesh(handleLeave)),
	}
}

// router dispatches one listener's requests.
type router struct {
	s        *Server
	readOnly bool
	routes   map[string]route
}

func (rt *router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rr, ok := rt.routes[r.URL.Path]
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no API route %s; see docs/design.md for the routes", r.URL.Path))
		return
	}
	if rt.readOnly && rr.mutating {
		writeError(w, http.StatusForbidden, fmt.Sprintf("%s changes state and is served only on the control socket; use the weft CLI on the peer's host", r.URL.Path))
		return
	}
	if r.Method != rr.method && !(rr.method == http.MethodGet && r.Method == http.MethodHead) {
		allow := rr.method
		if rr.method == http.MethodGet {
			allow = "GET, HEAD"
		}
		w.Header().Set("Allow", allow)
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s %s: method not allowed; use %s", r.Method, r.URL.Path, allow))
		return
	}
	rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
	if err := rr.handle(rec, r); err != nil {
		code := errorStatus(err)
		if code >= 500 && code != http.StatusServiceUnavailable {
			rt.s.log.Warn("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		} else {
			rt.s.log.Debug("request refused", "method", r.Method, "path", r.URL.Path, "code", code, "err", err)
		}
		writeError(rec, code, err.Error())
	}
	if rr.cniOp != "" {
		rt.s.metrics.observeCNI(rr.cniOp, rec.code, time.Since(start))
	}
}

// statusRecorder remembers the status code for the metrics.
type statusRecorder struct {
	http.ResponseWriter
	code  int
	wrote bool
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.wrote {
		r.code, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	r.wrote = true
	return r.ResponseWriter.Write(b)
}

// errorStatus maps a backend error to its HTTP status.
func errorStatus(err error) int {
	switch {
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrBadRequest):
		return http.StatusBadRequest
	case errors.Is(err, ErrConflict):
		return http.StatusConflict
	case errors.Is(err, ErrUnavailable), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, client.Error{Error: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		b, _ = json.Marshal(client.Error{Error: "encode answer: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

// decodeBody reads one JSON document of at most maxBody bytes into v.
// Every failure wraps ErrBadRequest with a message saying what to send.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	body := http.MaxBytesReader(w, r.Body, maxBody)
	dec := json.NewDecoder(body)
	if err := dec.Decode(v); err != nil {
		var maxErr *http.MaxBytesError
		var synErr *json.SyntaxError
		var typErr *json.UnmarshalTypeError
		switch {
		case errors.Is(err, io.EOF):
			return fmt.Errorf("%w: empty request body: send a JSON object, e.g. %s", ErrBadRequest, example(v))
		case errors.As(err, &maxErr):
			return fmt.Errorf("%w: request body larger than %d bytes", ErrBadRequest, maxErr.Limit)
		case errors.As(err, &synErr):
			return fmt.Errorf("%w: request body is not valid JSON (at byte %d: %v): send e.g. %s", ErrBadRequest, synErr.Offset, err, example(v))
		case errors.As(err, &typErr):
			return fmt.Errorf("%w: field %q must be a JSON %s, not %s: send e.g. %s", ErrBadRequest, typErr.Field, typErr.Type, typErr.Value, example(v))
		default:
			return fmt.Errorf("%w: decode request body: %v: send e.g. %s", ErrBadRequest, err, example(v))
		}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: request body has data after the JSON object: send exactly one object", ErrBadRequest)
	}
	return nil
}

// example returns a sample body for the messages of decodeBody.
func example(v any) string {
	switch v.(type) {
	case *client.AllocateRequest:
		return `{"id":"CONTAINER-ID"}`
	case *client.ReleaseRequest:
		return `{"id":"CONTAINER-ID"}`
	case *client.GCRequest:
		return `{"keep":["CONTAINER-ID"]}`
	case *client.DNSRequest:
		return `{"name":"web","address":"10.32.0.5"}`
	case *client.PeersRequest:
		return `{"peers":["192.168.1.10"]}`
	case *client.RmpeerRequest:
		return `{"name":"h3"}`
	}
	return "{}"
}

func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadRequest, fmt.Sprintf(format, args...))
}

func required(field, value string) error {
	if strings.TrimSpace(value) == "" {
		return badRequest("%q is required", field)
	}
	return nil
}
