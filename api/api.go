// Package api serves a weft peer's HTTP API: the full JSON API on the unix
// control socket (CLI, CNI plugin) and its read-only part on a TCP listener
// (status page, /status, /metrics, lookups). It owns routing, request
// decoding, error mapping, the embedded status page and the Prometheus
// metrics; the daemon implements Backend and owns everything behind it.
//
//	srv, err := api.New(api.Config{Socket: "/run/weft/weft.sock", HTTPAddr: "127.0.0.1:6784"}, backend)
//	if err != nil { return err }
//	return srv.Run(ctx) // until ctx is done, then graceful shutdown
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/weftmesh/weft/api/client"
	"github.com/weftmesh/weft/internal/version"
)

// Backend is what the server serves; the daemon implements it. Every method
// may be called concurrently from many requests. Blocking methods honour
// ctx (the request's context). Errors wrap the sentinels below to choose the
// HTTP status; their text is shown to the operator, so it should say what to
// do. Returned values are owned by the caller.
type Backend interface {
	Status(ctx context.Context) (*client.Status, error)
	Ready(ctx context.Context) client.Ready
	Allocate(ctx context.Context, req client.AllocateRequest) (*client.Allocation, error)
	Lookup(ctx context.Context, id string) (*client.Allocation, error)
	Release(ctx context.Context, id string) error
	GC(ctx context.Context, keep []string) (*client.GCResult, error)
	DNSAdd(ctx context.Context, req client.DNSRequest) error
	DNSRemove(ctx context.Context, req client.DNSRequest) error
	DNSLookup(ctx context.Context, name string) (*client.DNSLookup, error)
	Connect(ctx context.Context, peers []string) error
	Forget(ctx context.Context, peers []string) error
	Rmpeer(ctx context.Context, name string) (*client.RmpeerResult, error)
	// Leave hands this peer's address space to a live peer and stops the
	// peer (`weft reset` while the peer runs). It returns once the space
	// is handed over; the peer exits right after.
	Leave(ctx context.Context) error
	// Counters returns monotonic counters of the subsystems by name without
	// the weft_ prefix, e.g. "dns_queries_total", "reconcile_runs_total".
	// It must not block: it is called at every /metrics scrape.
	Counters() map[string]float64
}

// Sentinels a Backend wraps to choose the HTTP status of an error.
var (
	ErrNotFound    = errors.New("not found")             // 404
	ErrBadRequest  = errors.New("bad request")           // 400
	ErrConflict    = errors.New("conflict")              // 409, e.g. rmpeer of a live peer
	ErrUnavailable = errors.New("unavailable")           // 503: not ready, no space
	ErrSocketInUse = errors.New("control socket in use") // New: another process answers on Config.Socket
)

// Config configures a Server. Derive test configs from DefaultConfig.
type Config struct {
	// Socket is the unix control socket path serving the whole API, created
	// with mode 0600 (parent directory 0755). A stale socket file is replaced
	// only when nothing answers on it. "" = no socket.
	Socket string
	// HTTPAddr is the read-only TCP listener, host:port. "" = off; port 0
	// picks a free port (see Server.HTTPAddr).
	HTTPAddr string
	// Logger receives request errors and lifecycle messages; nil = discard.
	Logger *slog.Logger
	// Version is this weft's version, shown by the status page.
	Version string
}

// DefaultConfig returns the defaults of docs/design.md.
func DefaultConfig() Config {
	return Config{
		Socket:   client.DefaultSocket, // unix path
		HTTPAddr: "127.0.0.1:6784",     // host:port, read-only
		Logger:   nil,                  // discard
		Version:  version.Version,      // free text
	}
}

// Validate reports a config that cannot serve anything.
func (c Config) Validate() error {
	if c.Socket == "" && c.HTTPAddr == "" {
		return fmt.Errorf("api config: %w: neither Socket nor HTTPAddr set", ErrBadRequest)
	}
	return nil
}
