// Package client talks to a weft peer's HTTP API over its unix control socket
// (or, read-only, over TCP). It holds the API's JSON types and imports only
// the standard library, so the CNI plugin that links it stays small.
//
//	c := client.New("/run/weft/weft.sock")
//	a, err := c.Allocate(ctx, client.AllocateRequest{ID: containerID})
//	if errors.Is(err, client.ErrNotRunning) { ... }
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// DefaultSocket is where a peer listens unless told otherwise.
const DefaultSocket = "/run/weft/weft.sock"

var (
	// ErrNotRunning means nothing answers on the socket.
	ErrNotRunning = errors.New("weft peer not running")
	// ErrNotFound is a 404 from the peer (unknown ID, name or peer).
	ErrNotFound = errors.New("not found")
	// ErrPeerGone means the peer went away in the middle of the request
	// (killed while it served it: the connection was reset or closed
	// before the whole answer came). It may or may not have applied the
	// request.
	ErrPeerGone = errors.New("weft peer went away during the request")
)

// APIError is a non-2xx answer from the peer.
type APIError struct {
	Status  int    // HTTP status code
	Message string // the peer's explanation
}

func (e *APIError) Error() string { return e.Message }

// Is makes errors.Is(err, ErrNotFound) true for a 404.
func (e *APIError) Is(target error) bool {
	return target == ErrNotFound && e.Status == http.StatusNotFound
}

// Client is safe for concurrent use.
type Client struct {
	socket string // unix socket path; empty when base is a TCP URL
	base   string // http://host:port or http://unix
	hc     *http.Client
}

// New returns a client for the peer listening on the unix socket path.
func New(socket string) *Client {
	if socket == "" {
		socket = DefaultSocket
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConns:    2,
		IdleConnTimeout: 30 * time.Second,
	}
	return &Client{socket: socket, base: "http://weft", hc: &http.Client{Transport: tr, Timeout: 60 * time.Second}}
}

// NewTCP returns a client for a peer's read-only TCP listener (host:port).
func NewTCP(addr string) *Client {
	return &Client{base: "http://" + addr, hc: &http.Client{Timeout: 30 * time.Second}}
}

// Socket returns the unix socket path (empty for TCP clients).
func (c *Client) Socket() string { return c.socket }

// Do sends a request with an optional JSON body and decodes a JSON answer
// into out (when non-nil).
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if isDialError(err) {
			where := c.socket
			if where == "" {
				where = strings.TrimPrefix(c.base, "http://")
			}
			return fmt.Errorf("%w at %s (start it with 'weft launch', or pass --socket): %v", ErrNotRunning, where, err)
		}
		if isCut(err) {
			return fmt.Errorf("%s %s: %w: %v", method, path, ErrPeerGone, err)
		}
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		if isCut(err) {
			return fmt.Errorf("read answer of %s %s: %w: %v", method, path, ErrPeerGone, err)
		}
		return fmt.Errorf("read answer of %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e Error
		msg := strings.TrimSpace(string(data))
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		return &APIError{Status: resp.StatusCode, Message: msg}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode answer of %s %s: %w", method, path, err)
	}
	return nil
}

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// isCut says whether a connection that was made broke before the whole
// answer came: reset by the peer, or closed (EOF) mid-exchange.
func isCut(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// Status returns the peer's full status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var s Status
	return &s, c.Do(ctx, http.MethodGet, "/status", nil, &s)
}

// Ready reports whether the peer can serve pods.
func (c *Client) Ready(ctx context.Context) (*Ready, error) {
	var r Ready
	return &r, c.Do(ctx, http.MethodGet, "/ready", nil, &r)
}

// Allocate returns the address for req.ID, allocating one if needed.
func (c *Client) Allocate(ctx context.Context, req AllocateRequest) (*Allocation, error) {
	var a Allocation
	return &a, c.Do(ctx, http.MethodPost, "/ip/allocate", req, &a)
}

// Lookup returns the allocation of id, or an error matching ErrNotFound.
func (c *Client) Lookup(ctx context.Context, id string) (*Allocation, error) {
	var a Allocation
	return &a, c.Do(ctx, http.MethodGet, "/ip/lookup?id="+url.QueryEscape(id), nil, &a)
}

// Release frees the allocation of id and its DNS records; idempotent.
func (c *Client) Release(ctx context.Context, id string) error {
	return c.Do(ctx, http.MethodPost, "/ip/release", ReleaseRequest{ID: id}, nil)
}

// GC releases every allocation of the peer not in keep.
func (c *Client) GC(ctx context.Context, keep []string) (*GCResult, error) {
	var r GCResult
	return &r, c.Do(ctx, http.MethodPost, "/ip/gc", GCRequest{Keep: keep}, &r)
}

// DNSAdd registers name → address (owned by this peer).
func (c *Client) DNSAdd(ctx context.Context, req DNSRequest) error {
	return c.Do(ctx, http.MethodPost, "/dns/add", req, nil)
}

// DNSRemove removes records; see DNSRequest.
func (c *Client) DNSRemove(ctx context.Context, req DNSRequest) error {
	return c.Do(ctx, http.MethodPost, "/dns/remove", req, nil)
}

// DNSLookup returns the addresses of name.
func (c *Client) DNSLookup(ctx context.Context, name string) (*DNSLookup, error) {
	var r DNSLookup
	return &r, c.Do(ctx, http.MethodGet, "/dns/lookup?name="+url.QueryEscape(name), nil, &r)
}

// PolicyReport returns the NetworkPolicy report (`weft status policy`).
func (c *Client) PolicyReport(ctx context.Context) (*PolicyReport, error) {
	var r PolicyReport
	return &r, c.Do(ctx, http.MethodGet, "/policy/status", nil, &r)
}

// PolicyDrops returns the last dropped packets, newest first.
func (c *Client) PolicyDrops(ctx context.Context) ([]PolicyDrop, error) {
	var r []PolicyDrop
	return r, c.Do(ctx, http.MethodGet, "/policy/drops", nil, &r)
}

// PolicyExplain judges a connection with the peer's model.
func (c *Client) PolicyExplain(ctx context.Context, req ExplainRequest) (*Explanation, error) {
	q := url.Values{"src": {req.Src}, "dst": {req.Dst}, "port": {strconv.Itoa(req.Port)}, "protocol": {req.Protocol}}
	var r Explanation
	return &r, c.Do(ctx, http.MethodGet, "/policy/explain?"+q.Encode(), nil, &r)
}
