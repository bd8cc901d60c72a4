// Package api serves a weft peer's HTTP API: the full JSON API on the unix
// control socket (CLI, CNI plugin) and its read-only part on a TCP listener
// (status page, /status, /metrics, lookups). It owns routing, request
// decoding, error mapping, the embedded status page and the Prometheus
// metrics; the daemon implements the Backends and owns everything behind
// them.
//
//	srv, err := api.New(api.Config{Socket: "/run/weft/weft.sock", HTTPAddr: "127.0.0.1:6784"}, api.All(daemon))
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

// The server's dependencies are four small interfaces, one per group of
// routes, so that a handler sees only what it uses and a test fakes only
// what it exercises. For all of them: every method may be called
// concurrently from many requests; blocking methods honour ctx (the
// request's context, cancelled when the client goes away); errors wrap the
// sentinels below to choose the HTTP status, and their text is shown to the
// operator, so it should say what to do; returned values are owned by the
// caller (the server may modify them).

// Reporter reports this peer's state: the status page, /status and its
// parts, /ready and /metrics.
type Reporter interface {
	// Status is a snapshot of the peer and its view of the mesh. It is
	// called once per /status request and once per /metrics scrape (with a
	// 5 s deadline), so it should not wait on other peers. ErrUnavailable
	// while the peer is starting.
	Status(ctx context.Context) (*client.Status, error)
	// Ready says whether pods can be served now (CNI STATUS); the reason
	// when not. It must answer at once.
	Ready(ctx context.Context) client.Ready
	// Counters returns monotonic counters of the subsystems by name without
	// the weft_ prefix, e.g. "dns_queries_total", "reconcile_runs_total".
	// It must not block: it is called at every /metrics scrape.
	Counters() map[string]float64
}

// Addresses holds the pods' addresses: /ip/allocate, /ip/lookup,
// /ip/release and /ip/gc.
type Addresses interface {
	// Allocate returns the address of req.ID, allocating one if it has
	// none: the same ID always gets the same address. It may block until
	// the ring is ready or another peer donates space (within ctx);
	// ErrUnavailable when there is no space or the wait ran out,
	// ErrBadRequest for a reserved ID.
	Allocate(ctx context.Context, req client.AllocateRequest) (*client.Allocation, error)
	// Lookup returns id's allocation without allocating; ErrNotFound when
	// there is none. It does not block.
	Lookup(ctx context.Context, id string) (*client.Allocation, error)
	// Release frees id's address and the DNS records of that container.
	// Idempotent: releasing an unknown ID is not an error.
	Release(ctx context.Context, id string) error
	// GC releases every allocation of this peer whose ID is not in keep
	// (never the bridge's) and lists what it released.
	GC(ctx context.Context, keep []string) (*client.GCResult, error)
}

// Names holds the DNS records: /dns/add, /dns/remove and /dns/lookup.
// None of the methods waits on other peers; records replicate afterwards.
// ErrUnavailable when DNS is off on this peer.
type Names interface {
	// DNSAdd registers req.Name → req.Address (req.ContainerID, if set,
	// ties the record to that container's release). ErrBadRequest for an
	// address or name that is not valid.
	DNSAdd(ctx context.Context, req client.DNSRequest) error
	// DNSRemove removes this peer's records: a container's, every address
	// of a name, or one name → address pair (see client.DNSRequest).
	// ErrNotFound when nothing matches a name.
	DNSRemove(ctx context.Context, req client.DNSRequest) error
	// DNSLookup answers from the replicated record set; ErrNotFound when
	// the name has no address.
	DNSLookup(ctx context.Context, name string) (*client.DNSLookup, error)
}

// Membership changes the mesh: /connect, /forget, /rmpeer and /leave.
type Membership interface {
	// Connect adds peers (host or host:port) to the persistent join
	// targets and joins them now, blocking for the join (within ctx).
	// ErrUnavailable when none answers: the targets are kept and retried.
	Connect(ctx context.Context, peers []string) error
	// Forget removes join targets and forgets departed peers of those
	// names. It does not block.
	Forget(ctx context.Context, peers []string) error
	// Rmpeer takes the address space of the dead peer name over; it blocks
	// while a majority agrees (within ctx). ErrConflict when the peer is
	// alive, ErrNotFound when it owns no space, ErrUnavailable
	// without a quorum.
	Rmpeer(ctx context.Context, name string) (*client.RmpeerResult, error)
	// Leave hands this peer's address space to a live peer and stops the
	// peer (`weft reset` while the peer runs). It returns once the space
	// is handed over; the peer exits right after. ErrUnavailable when no
	// live peer takes the space.
	Leave(ctx context.Context) error
}

// Policies answers NetworkPolicy questions: /policy/status,
// /policy/drops and /policy/explain (read-only, so served over TCP too),
// and the drop counters of /metrics. ErrUnavailable when the peer does
// not enforce NetworkPolicy (not in Kubernetes mode) or has no model yet.
type Policies interface {
	// PolicyReport is the state of enforcement on this node. It does not
	// block.
	PolicyReport(ctx context.Context) (*client.PolicyReport, error)
	// PolicyDrops returns the last dropped packets, newest first. It does
	// not block.
	PolicyDrops(ctx context.Context) ([]client.PolicyDrop, error)
	// PolicyExplain judges a connection with the current model.
	// ErrBadRequest for an endpoint, port or protocol it cannot read,
	// ErrNotFound for a pod that is not in the model.
	PolicyExplain(ctx context.Context, req client.ExplainRequest) (*client.Explanation, error)
	// PolicyDropCounts returns the logged drops per local pod and
	// direction since the peer started. It must not block: it is called
	// at every /metrics scrape.
	PolicyDropCounts() []client.PolicyDropCount
}

// Backend is all five parts: what the daemon implements.
type Backend interface {
	Reporter
	Addresses
	Names
	Membership
	Policies
}

// Backends are what a Server serves, one field per part. A nil field turns
// its routes into 503 answers that name the missing part; the status page
// itself needs none (it reads /status).
type Backends struct {
	Reporter   Reporter   // /status, /status/*, /ready, /metrics' gauges and counters
	Addresses  Addresses  // /ip/*
	Names      Names      // /dns/*
	Membership Membership // /connect, /forget, /rmpeer, /leave
	Policies   Policies   // /policy/*, the drop counters of /metrics
}

// All serves every part from b.
func All(b Backend) Backends {
	return Backends{Reporter: b, Addresses: b, Names: b, Membership: b, Policies: b}
}

// Sentinels a backend wraps to choose the HTTP status of an error.
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
