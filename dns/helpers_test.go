package dns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	miekg "github.com/miekg/dns"
	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/peer"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type nopTransport struct{}

func (nopTransport) Broadcast([]byte) {}

// testConfig derives a test configuration from the default.
func testConfig(self peer.ID) Config {
	cfg := DefaultConfig()
	cfg.Self = self
	cfg.Upstreams = []string{"127.0.0.1:1"} // tests that forward set their own upstream
	cfg.Range = netip.MustParsePrefix("10.32.0.0/12")
	cfg.Timeout = 500 * time.Millisecond
	cfg.UDPSockets = 2
	return cfg
}

func newServer(t *testing.T, cfg Config, tr Transport) *Server {
	t.Helper()
	if tr == nil {
		tr = nopTransport{}
	}
	s, err := New(cfg, tr)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// runServer runs s on 127.0.0.1 (a free port) until the test ends and
// returns the address it serves.
func runServer(t *testing.T, s *Server) netip.AddrPort {
	t.Helper()
	if err := s.SetListen([]string{"127.0.0.1:0"}); err != nil {
		t.Fatalf("SetListen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	testutil.Eventually(t, 5*time.Second, "server listening", listening(s, 1))
	return s.ListenAddrs()[0]
}

// listening is a condition for testutil.Eventually: s serves n addresses.
func listening(s *Server, n int) func() error {
	return func() error {
		if got := s.ListenAddrs(); len(got) != n {
			return fmt.Errorf("listening on %v; want %d addresses", got, n)
		}
		return nil
	}
}

// upstream is a test resolver on 127.0.0.1 (UDP and TCP, same port).
type upstream struct {
	addr  netip.AddrPort
	mu    sync.Mutex // guards following
	count map[string]int
}

func (u *upstream) queries(net string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.count[net]
}

// startUpstream serves h on 127.0.0.1 until the test ends.
func startUpstream(t *testing.T, h miekg.HandlerFunc) *upstream {
	t.Helper()
	u := &upstream{count: map[string]int{}}
	var pc net.PacketConn
	var ln net.Listener
	for i := 0; ; i++ {
		var err error
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
		if i == 5 {
			t.Fatal(err)
		}
	}
	u.addr = pc.LocalAddr().(*net.UDPAddr).AddrPort()
	counted := miekg.HandlerFunc(func(w miekg.ResponseWriter, r *miekg.Msg) {
		u.mu.Lock()
		u.count[w.RemoteAddr().Network()]++
		u.mu.Unlock()
		h(w, r)
	})
	for _, srv := range []*miekg.Server{{PacketConn: pc, Handler: counted}, {Listener: ln, Handler: counted}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		done := make(chan struct{})
		go func() { defer close(done); _ = srv.ActivateAndServe() }()
		<-started
		t.Cleanup(func() { _ = srv.Shutdown(); <-done })
	}
	return u
}

// exampleUpstream answers A questions with 192.0.2.1 and everything else
// with NXDOMAIN.
func exampleUpstream(w miekg.ResponseWriter, r *miekg.Msg) {
	m := new(miekg.Msg)
	m.SetReply(r)
	m.RecursionAvailable = true
	if r.Question[0].Qtype == miekg.TypeA {
		rr, _ := miekg.NewRR(r.Question[0].Name + " 60 IN A 192.0.2.1")
		m.Answer = append(m.Answer, rr)
	} else {
		m.Rcode = miekg.RcodeNameError
	}
	_ = w.WriteMsg(m)
}

// summary is the comparable part of a response.
type summary struct {
	Rcode  string
	AA, TC bool
	Answer []string // sorted
	Ns     []string
	EDNS   bool
}

func summarize(m *miekg.Msg) summary {
	s := summary{Rcode: miekg.RcodeToString[m.Rcode], AA: m.Authoritative, TC: m.Truncated, EDNS: m.IsEdns0() != nil}
	for _, rr := range m.Answer {
		s.Answer = append(s.Answer, rr.String())
	}
	slices.Sort(s.Answer)
	for _, rr := range m.Ns {
		s.Ns = append(s.Ns, rr.Header().Name+" "+miekg.TypeToString[rr.Header().Rrtype])
	}
	return s
}

func diff(want, got summary) string { return cmp.Diff(want, got) }

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// runBenchServer is runServer for benchmarks.
func runBenchServer(b *testing.B, s *Server) netip.AddrPort {
	b.Helper()
	if err := s.SetListen([]string{"127.0.0.1:0"}); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-done })
	testutil.Eventually(b, 5*time.Second, "server to start", listening(s, 1))
	return s.ListenAddrs()[0]
}
