package api

// Request pipeline: router.ServeHTTP finds the route by exact path, refuses
// what the listener does not serve (403 for mutating paths over TCP, 405 for
// a wrong method), decodes the JSON body (at most 1 MiB), calls the Backend,
// and writes JSON; errors are client.Error bodies whose status comes from
// the Backend's sentinel.

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
	handle func(s *Server, w http.ResponseWriter, r *http.Request) error
}

// routes is the API. It is a function, not a package variable, so the table
// stays immutable.
func routes() map[string]route {
	get := func(h func(*Server, http.ResponseWriter, *http.Request) error) route {
		return route{method: http.MethodGet, handle: h}
	}
	post := func(op string, h func(*Server, http.ResponseWriter, *http.Request) error) route {
		return route{method: http.MethodPost, mutating: true, cniOp: op, handle: h}
	}
	return map[string]route{
		"/":             get((*Server).handlePage),
		"/status":       get((*Server).handleStatus),
		"/status/peers": get((*Server).handleStatusPeers),
		"/status/ipam":  get((*Server).handleStatusIPAM),
		"/status/dns":   get((*Server).handleStatusDNS),
		"/ready":        get((*Server).handleReady),
		"/ip/lookup":    get((*Server).handleLookup),
		"/dns/lookup":   get((*Server).handleDNSLookup),
		"/metrics":      get((*Server).handleMetrics),
		"/ip/allocate":  post("allocate", (*Server).handleAllocate),
		"/ip/release":   post("release", (*Server).handleRelease),
		"/ip/gc":        post("gc", (*Server).handleGC),
		"/dns/add":      post("dns_add", (*Server).handleDNSAdd),
		"/dns/remove":   post("dns_remove", (*Server).handleDNSRemove),
		"/connect":      post("", (*Server).handleConnect),
		"/forget":       post("", (*Server).handleForget),
		"/rmpeer":       post("", (*Server).handleRmpeer),
		"/leave":        post("", (*Server).handleLeave),
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
	if err := rr.handle(rt.s, rec, r); err != nil {
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

// errorStatus maps a Backend error to its HTTP status.
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
