package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Server serves the API on the control socket and the read-only TCP
// listener. Both listeners are opened by New, so a caller learns about a
// busy port or socket before it starts anything else.
type Server struct {
	cfg      Config
	backends Backends
	log      *slog.Logger
	metrics  *metrics

	unixLn net.Listener // nil when Config.Socket is ""
	tcpLn  net.Listener // nil when Config.HTTPAddr is ""

	mu      sync.Mutex // guards following
	running bool
}

// Timeouts of both listeners. Allocation may wait for a donation from
// another peer, so writes get more time than the client's 60 s.
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = 90 * time.Second
	idleTimeout       = 60 * time.Second
	shutdownTimeout   = 5 * time.Second
)

// New opens the listeners of cfg; Run serves them with b. At least one
// part of b must be set; the routes of a nil part answer 503.
func New(cfg Config, b Backends) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if b.Reporter == nil && b.Addresses == nil && b.Names == nil && b.Membership == nil && b.Policies == nil {
		return nil, fmt.Errorf("api new: %w: no backends (api.All(daemon) serves them all)", ErrBadRequest)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, backends: b, log: log.With("component", "api")}
	s.metrics = newMetrics(b.Reporter, b.Policies)
	if cfg.HTTPAddr != "" {
		ln, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return nil, fmt.Errorf("api listen tcp %s: %w", cfg.HTTPAddr, err)
		}
		s.tcpLn = ln
	}
	if cfg.Socket != "" {
		ln, err := listenUnix(cfg.Socket)
		if err != nil {
			if s.tcpLn != nil {
				s.tcpLn.Close()
			}
			return nil, err
		}
		s.unixLn = ln
	}
	return s, nil
}

// HTTPAddr returns the TCP listener's address, or nil when it is off.
func (s *Server) HTTPAddr() net.Addr {
	if s.tcpLn == nil {
		return nil
	}
	return s.tcpLn.Addr()
}

// Handler returns the handler of one listener: the full API when readOnly
// is false (the control socket), only GET/HEAD of read-only routes when it
// is true (TCP). Run uses it; tests may mount it on httptest servers.
func (s *Server) Handler(readOnly bool) http.Handler {
	return &router{s: s, readOnly: readOnly, routes: s.routes()}
}

// Run serves both listeners until ctx is done, then shuts down gracefully
// (in-flight requests get a few seconds), removes the socket file and
// returns after every serving goroutine has exited. It returns nil after a
// normal shutdown, or the first listener error. Run may be called once.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return errors.New("api run: already running")
	}
	s.running = true
	s.mu.Unlock()

	type served struct {
		srv *http.Server
		ln  net.Listener
	}
	var all []served
	if s.unixLn != nil {
		all = append(all, served{s.newHTTPServer(false), s.unixLn})
	}
	if s.tcpLn != nil {
		all = append(all, served{s.newHTTPServer(true), s.tcpLn})
	}
	s.log.Info("serving API", "socket", s.cfg.Socket, "http", s.HTTPAddr())

	errc := make(chan error, len(all))
	for _, a := range all {
		go func() {
			err := a.srv.Serve(a.ln)
			if errors.Is(err, http.ErrServerClosed) {
				err = nil
			} else if err != nil {
				err = fmt.Errorf("api serve %s: %w", a.ln.Addr(), err)
			}
			errc <- err
		}()
	}

	var first error
	pending := len(all)
	select {
	case <-ctx.Done():
	case first = <-errc:
		pending--
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	for _, a := range all {
		if err := a.srv.Shutdown(sctx); err != nil {
			a.srv.Close() // stragglers: cut them
		}
	}
	for ; pending > 0; pending-- {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
	}
	if s.cfg.Socket != "" {
		if err := os.Remove(s.cfg.Socket); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("remove control socket", "path", s.cfg.Socket, "err", err)
		}
	}
	s.log.Info("API stopped")
	return first
}

// Close releases the listeners of a Server whose Run was never called (for
// a daemon that fails after New). It must not be called after Run.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running {
		return errors.New("api close: running; cancel Run's context instead")
	}
	s.running = true // Run must not start on closed listeners
	if s.tcpLn != nil {
		s.tcpLn.Close()
	}
	if s.unixLn != nil {
		s.unixLn.Close()
		os.Remove(s.cfg.Socket)
	}
	return nil
}

func (s *Server) newHTTPServer(readOnly bool) *http.Server {
	return &http.Server{
		Handler:           s.Handler(readOnly),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
}

// listenUnix creates the control socket at path with mode 0600. The socket
// is bound under a temporary name in the same directory, chmod-ed, then
// renamed into place, so there is no moment when path is reachable with
// wider permissions (a chmod after listen would leave a window; umask is
// process-wide and not ours to change). An existing path is replaced only
// if it is a socket nobody answers on.
func listenUnix(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("api create socket dir %s: %w", dir, err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("api listen %s: exists and is not a socket; remove it or choose another --socket", path)
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("api listen %s: %w: another weft peer is running there (stop it, or pass another --socket)", path, ErrSocketInUse)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("api listen %s: cannot tell whether the existing socket is in use: %w", path, err)
		}
		// Stale: left by a peer that did not shut down cleanly.
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("api remove stale socket %s: %w", path, err)
		}
	}
	tmp := filepath.Join(dir, ".weft-"+strconv.Itoa(os.Getpid())+"-"+strconv.FormatInt(time.Now().UnixNano(), 36)+".sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("api listen unix %s: %w", path, err)
	}
	// Run removes the final path itself; the listener only knows tmp.
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (net.Listener, error) {
		ln.Close()
		os.Remove(tmp)
		return nil, err
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fail(fmt.Errorf("api chmod socket %s: %w", tmp, err))
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(fmt.Errorf("api rename socket %s to %s: %w", tmp, path, err))
	}
	return ln, nil
}
