package dns

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/peer"
)

// Transport carries record deltas to every peer. Broadcast is best effort
// (messages may be lost, duplicated or reordered; full-state anti-entropy
// repairs that), must not block, and must not keep msg after returning
// unless it copies it. gossip.Channel implements it.
type Transport interface{ Broadcast(msg []byte) }

// Entry is one visible record.
type Entry struct {
	Name        string // FQDN, lowercase, trailing dot
	Addr        netip.Addr
	Owner       peer.ID
	ContainerID string
}

// Stats are the server's counters since New.
type Stats struct {
	Queries   uint64 // queries answered or forwarded
	Local     uint64 // answered from the record set
	Forwarded uint64 // sent to the upstreams
	NXDomain  uint64 // NXDOMAIN answers, local or forwarded
	ServFail  uint64 // SERVFAIL because every upstream failed
	Errors    uint64 // malformed or unanswerable packets, write errors
}

type counters struct {
	queries, local, forwarded, nxdomain, servfail, errors atomic.Uint64
}

// Server is a peer's DNS server and its replica of the record set. Its
// methods are safe for concurrent use.
type Server struct {
	cfg Config
	tr  Transport
	log *slog.Logger

	stats      counters
	snap       atomic.Pointer[zone]             // answers; nil = rebuild at next use
	upstreams  atomic.Pointer[[]netip.AddrPort] // current forwarders
	bound      atomic.Pointer[[]netip.AddrPort] // addresses we listen on (never forwarded to)
	ctx        atomic.Pointer[context.Context]  // Run's context, for forwarding
	wg         sync.WaitGroup                   // serving goroutines
	forwarding chan struct{}                    // semaphore of queries being forwarded

	rebind chan struct{} // SetListen left an address unbound: Run retries (cap 1)

	lmu       sync.Mutex // guards following; taken before mu
	desired   []string
	listeners map[string]*listener
	running   bool
	closed    bool

	mu        sync.Mutex // guards following
	set       *recordSet
	clock     uint64                // last version stamped on our records
	members   map[peer.ID]bool      // peers that are up; nil = membership unknown (all visible)
	owners    map[peer.ID]bool      // peers that own address space in the ring
	goneSince map[peer.ID]time.Time // when a known peer stopped being alive
	full      []byte                // cached FullState; nil = re-encode
}

// New returns a server; it binds nothing until Run.
func New(cfg Config, tr Transport) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Domain = strings.ToLower(cfg.Domain)
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:        cfg,
		tr:         tr,
		log:        log.With("component", "dns"),
		desired:    slices.Clone(cfg.Listen),
		listeners:  make(map[string]*listener),
		set:        newRecordSet(),
		goneSince:  make(map[peer.ID]time.Time),
		forwarding: make(chan struct{}, maxForwards),
		rebind:     make(chan struct{}, 1),
	}
	var ups []netip.AddrPort
	for _, u := range cfg.Upstreams {
		ap, _ := parseHostPort(u, 53) // validated
		ups = append(ups, ap)
	}
	s.upstreams.Store(&ups)
	s.bound.Store(&[]netip.AddrPort{})
	bg := context.Background()
	s.ctx.Store(&bg)
	return s, nil
}

func (s *Server) baseCtx() context.Context { return *s.ctx.Load() }

// Run binds the listen addresses and serves until ctx is done; it re-reads
// resolv.conf when it changes and collects tombstones and the records of
// long-gone peers. It returns after every goroutine it started has exited.
func (s *Server) Run(ctx context.Context) error {
	s.lmu.Lock()
	if s.running || s.closed {
		s.lmu.Unlock()
		return fmt.Errorf("dns run: %w", ErrClosed)
	}
	s.running = true
	s.ctx.Store(&ctx)
	err := s.applyListenLocked()
	s.lmu.Unlock()
	defer s.shutdown()
	if err != nil {
		return err
	}
	var rc resolvConf
	if _, err := s.loadResolvConf(&rc); err != nil {
		s.log.Warn("no upstreams yet", "err", err)
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	retry := time.NewTimer(0)
	retry.Stop()
	var backoff time.Duration
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.rebind:
			backoff = 0
			retry.Reset(rebindFirst)
		case <-retry.C:
			s.lmu.Lock()
			err := s.applyListenLocked()
			s.lmu.Unlock()
			if err != nil {
				backoff = min(max(2*backoff, rebindFirst), rebindMax)
				s.log.Debug("listen (retrying)", "err", err, "in", backoff)
				retry.Reset(backoff)
			}
		case now := <-tick.C:
			if _, err := s.loadResolvConf(&rc); err != nil {
				s.log.Debug("re-read resolv.conf", "err", err)
			}
			s.collect(now)
		}
	}
}

func (s *Server) shutdown() {
	s.lmu.Lock()
	s.closed = true
	for k, l := range s.listeners {
		l.close()
		delete(s.listeners, k)
	}
	s.bound.Store(&[]netip.AddrPort{})
	s.lmu.Unlock()
	s.wg.Wait()
}

// Retrying an address SetListen could not bind (usually one the router has
// not put on the bridge yet): first after rebindFirst, doubling up to
// rebindMax, until it binds or is no longer wanted.
const (
	rebindFirst = 100 * time.Millisecond
	rebindMax   = 2 * time.Second
)

// SetListen sets the addresses to serve (host:port, UDP and TCP each): it
// binds the new ones and closes the removed ones. Before Run it only
// records them. It returns the first bind error, having applied the rest;
// Run keeps trying to bind what failed.
func (s *Server) SetListen(addrs []string) error {
	for _, a := range addrs {
		if _, err := parseHostPort(a, 53); err != nil {
			return fmt.Errorf("set listen %q: %w", a, err)
		}
	}
	s.lmu.Lock()
	defer s.lmu.Unlock()
	if s.closed {
		return fmt.Errorf("set listen: %w", ErrClosed)
	}
	s.desired = slices.Clone(addrs)
	if !s.running {
		return nil
	}
	err := s.applyListenLocked()
	if err != nil {
		select {
		case s.rebind <- struct{}{}:
		default:
		}
	}
	return err
}

func (s *Server) applyListenLocked() error {
	var firstErr error
	for spec, l := range s.listeners {
		if !slices.Contains(s.desired, spec) {
			l.close()
			delete(s.listeners, spec)
			s.log.Info("stopped listening", "addr", l.addr)
		}
	}
	for _, spec := range s.desired {
		if _, ok := s.listeners[spec]; ok {
			continue
		}
		l, err := s.open(spec)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		s.listeners[spec] = l
	}
	bound := make([]netip.AddrPort, 0, len(s.listeners))
	for _, l := range s.listeners {
		bound = append(bound, l.addr)
	}
	slices.SortFunc(bound, netip.AddrPort.Compare)
	s.bound.Store(&bound)
	return firstErr
}

// Domain returns the zone answered locally, lowercase and fully qualified.
func (s *Server) Domain() string { return s.cfg.Domain }

// ListenAddrs returns the addresses being served, with the ports the
// kernel chose for port 0.
func (s *Server) ListenAddrs() []netip.AddrPort { return slices.Clone(*s.bound.Load()) }

// Stats returns the counters.
func (s *Server) Stats() Stats {
	return Stats{
		Queries:   s.stats.queries.Load(),
		Local:     s.stats.local.Load(),
		Forwarded: s.stats.forwarded.Load(),
		NXDomain:  s.stats.nxdomain.Load(),
		ServFail:  s.stats.servfail.Load(),
		Errors:    s.stats.errors.Load(),
	}
}
