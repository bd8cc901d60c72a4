package dns

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	miekg "github.com/miekg/dns"
	"github.com/weftmesh/weft/dns/dnstest"
	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/peer"
)

func exchange(t *testing.T, netw string, addr netip.AddrPort, q *miekg.Msg) *miekg.Msg {
	t.Helper()
	c := &miekg.Client{Net: netw, Timeout: 3 * time.Second}
	resp, _, err := c.Exchange(q, addr.String())
	if err != nil {
		t.Fatalf("exchange %s %s with %s: %v", netw, q.Question[0].Name, addr, err)
	}
	return resp
}

func TestLiveServer(t *testing.T) {
	s := zoneServer(t)
	addr := runServer(t, s)
	for _, tc := range answerCases() {
		for _, netw := range []string{"udp", "tcp"} {
			t.Run(tc.name+"/"+netw, func(t *testing.T) {
				resp := exchange(t, netw, addr, query(tc.qname, tc.qtype, tc.edns))
				if d := diff(tc.want, summarize(resp)); d != "" {
					t.Errorf("%s %s over %s (-want +got):\n%s", tc.qname, miekg.TypeToString[tc.qtype], netw, d)
				}
			})
		}
	}
	st := s.Stats()
	if st.Queries == 0 || st.Local == 0 || st.Forwarded == 0 || st.NXDomain == 0 {
		t.Errorf("Stats = %+v; want queries, local, forwarded and nxdomain counted", st)
	}
}

// TestUDPTruncatedRetriedOverTCP: the client gets TC over UDP for a large
// local answer and everything over TCP; a truncated upstream answer is
// asked again over TCP.
func TestUDPTruncatedRetriedOverTCP(t *testing.T) {
	up := startUpstream(t, func(w miekg.ResponseWriter, r *miekg.Msg) {
		m := new(miekg.Msg)
		m.SetReply(r)
		if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
			m.Truncated = true
		} else {
			for i := 1; i <= 3; i++ {
				rr, _ := miekg.NewRR(fmt.Sprintf("%s 60 IN A 192.0.2.%d", r.Question[0].Name, i))
				m.Answer = append(m.Answer, rr)
			}
		}
		_ = w.WriteMsg(m)
	})
	cfg := testConfig(self)
	cfg.Upstreams = []string{up.addr.String()}
	s := newServer(t, cfg, nil)
	addr := runServer(t, s)
	resp := exchange(t, "udp", addr, query("big.example.", miekg.TypeA, false))
	if resp.IsEdns0() != nil {
		t.Errorf("answer to a query without EDNS carries an OPT record")
	}
	if len(resp.Answer) != 3 || resp.Truncated {
		t.Errorf("forwarded answer = %v; want the 3 records fetched over TCP", resp)
	}
	if up.queries("tcp") != 1 {
		t.Errorf("upstream saw %d TCP queries; want 1", up.queries("tcp"))
	}
}

func TestForwardFailures(t *testing.T) {
	// A port nobody listens on (connection refused) and a socket that never answers.
	closed, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.LocalAddr().String()
	closed.Close()
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	good := startUpstream(t, exampleUpstream)

	for _, tc := range []struct {
		name      string
		upstreams []string
		wantRcode int
		within    time.Duration
	}{
		{"refused", []string{closedAddr}, miekg.RcodeServerFailure, time.Second},
		{"silent", []string{silent.LocalAddr().String()}, miekg.RcodeServerFailure, 1500 * time.Millisecond},
		{"silent then good", []string{silent.LocalAddr().String(), good.addr.String()}, miekg.RcodeSuccess, 1500 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(self)
			cfg.Upstreams = tc.upstreams
			cfg.Timeout = time.Second
			s := newServer(t, cfg, nil)
			addr := runServer(t, s)
			start := time.Now()
			resp := exchange(t, "udp", addr, query("example.com.", miekg.TypeA, false))
			if took := time.Since(start); resp.Rcode != tc.wantRcode || took > tc.within {
				t.Errorf("rcode %s after %s; want %s within %s", miekg.RcodeToString[resp.Rcode], took, miekg.RcodeToString[tc.wantRcode], tc.within)
			}
		})
	}
}

func TestNeverForwardsToItself(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	self := pc.LocalAddr().String()
	pc.Close()
	cfg := testConfig(0x1)
	cfg.Upstreams = []string{self}
	s := newServer(t, cfg, nil)
	if err := s.SetListen([]string{self}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	testutil.Eventually(t, 5*time.Second, "listening", listening(s, 1))
	resp := exchange(t, "udp", s.ListenAddrs()[0], query("example.com.", miekg.TypeA, false))
	if resp.Rcode != miekg.RcodeServerFailure {
		t.Errorf("rcode = %s; want SERVFAIL (the only upstream is ourselves)", miekg.RcodeToString[resp.Rcode])
	}
	if st := s.Stats(); st.Queries != 1 {
		t.Errorf("server saw %d queries; want 1 (no loop)", st.Queries)
	}
}

// TestMalformedFlood sends 10,000 malformed packets to a live server and
// checks that it still answers.
func TestMalformedFlood(t *testing.T) {
	s := zoneServer(t)
	addr := runServer(t, s)
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	good, _ := query("web.weft.local.", miekg.TypeA, true).Pack()
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 10000; i++ {
		var pkt []byte
		switch i % 5 {
		case 0: // random bytes
			pkt = make([]byte, rng.IntN(600))
			for j := range pkt {
				pkt[j] = byte(rng.Uint32())
			}
		case 1: // a good query cut short
			pkt = good[:rng.IntN(len(good))]
		case 2: // a good query with a byte flipped
			pkt = append([]byte(nil), good...)
			pkt[rng.IntN(len(pkt))] ^= byte(1 + rng.IntN(255))
		case 3: // compression pointer loop in the question
			pkt = []byte{0, byte(i), 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0, 1, 0, 1}
		case 4: // huge counts
			pkt = append([]byte(nil), good...)
			pkt[4], pkt[5], pkt[10], pkt[11] = 0xff, 0xff, 0xff, 0xff
		}
		if i%1000 == 0 { // longer than the read buffer
			pkt = append(append([]byte(nil), good...), make([]byte, readSize)...)
		}
		if _, err := conn.Write(pkt); err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	testutil.Eventually(t, 10*time.Second, "an answer after the flood", func() error {
		c := &miekg.Client{Net: "udp", Timeout: 500 * time.Millisecond}
		resp, _, err := c.Exchange(query("web.weft.local.", miekg.TypeA, false), addr.String())
		if err == nil && len(resp.Answer) != 2 {
			err = fmt.Errorf("answers %v; want 2", resp.Answer)
		}
		return err
	})
	if st := s.Stats(); st.Errors == 0 {
		t.Errorf("Stats.Errors = 0 after the flood; want malformed packets counted")
	}
}

func TestSetListen(t *testing.T) {
	s := zoneServer(t)
	a := runServer(t, s)
	if err := s.SetListen([]string{"127.0.0.1:0", "127.0.0.2:0"}); err != nil {
		t.Fatalf("SetListen two: %v", err)
	}
	addrs := s.ListenAddrs()
	if len(addrs) != 2 {
		t.Fatalf("ListenAddrs = %v; want 2", addrs)
	}
	var b netip.AddrPort
	for _, x := range addrs {
		if x.Addr() == mustAddr("127.0.0.2") {
			b = x
		}
	}
	for _, x := range []netip.AddrPort{a, b} {
		exchange(t, "udp", x, query("web.weft.local.", miekg.TypeA, false))
		exchange(t, "tcp", x, query("web.weft.local.", miekg.TypeA, false))
	}
	if err := s.SetListen([]string{"127.0.0.2:0"}); err != nil {
		t.Fatalf("SetListen one: %v", err)
	}
	if got := s.ListenAddrs(); len(got) != 1 || got[0] != b {
		t.Errorf("ListenAddrs = %v; want [%s]", got, b)
	}
	c := &miekg.Client{Net: "tcp", Timeout: time.Second}
	if _, _, err := c.Exchange(query("web.weft.local.", miekg.TypeA, false), a.String()); err == nil {
		t.Errorf("removed address %s still answers over TCP", a)
	}
	exchange(t, "udp", b, query("web.weft.local.", miekg.TypeA, false))
	if err := s.SetListen([]string{"not an address"}); err == nil {
		t.Errorf("SetListen(garbage) = nil; want error")
	}
}

// TestResolvConfReload: upstreams come from resolv.conf and follow its
// changes. resolv.conf cannot name a port, so the test upstreams listen on
// port 53 of random loopback addresses, which needs root.
func TestResolvConfReload(t *testing.T) {
	testutil.Root(t) // to bind port 53 on loopback
	answering := func(ip string) (netip.Addr, func()) {
		a := netip.AddrFrom4([4]byte{127, byte(100 + rand.IntN(100)), byte(rand.IntN(256)), byte(1 + rand.IntN(250))})
		srv := &miekg.Server{Addr: a.String() + ":53", Net: "udp", Handler: miekg.HandlerFunc(func(w miekg.ResponseWriter, r *miekg.Msg) {
			m := new(miekg.Msg)
			m.SetReply(r)
			rr, _ := miekg.NewRR(r.Question[0].Name + " 60 IN A " + ip)
			m.Answer = append(m.Answer, rr)
			_ = w.WriteMsg(m)
		})}
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		done := make(chan error, 1)
		go func() { done <- srv.ListenAndServe() }()
		select {
		case <-started:
		case err := <-done:
			t.Fatalf("upstream on %s: %v", a, err)
		}
		return a, func() { _ = srv.Shutdown(); <-done }
	}
	a1, stop1 := answering("192.0.2.1")
	defer stop1()
	a2, stop2 := answering("192.0.2.2")
	defer stop2()
	path := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(path, []byte("nameserver "+a1.String()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(self)
	cfg.Upstreams = nil
	cfg.ResolvConf = path
	s := newServer(t, cfg, nil)
	addr := runServer(t, s)
	answerIs := func(ip string) func() error {
		return func() error {
			c := &miekg.Client{Net: "udp", Timeout: time.Second}
			resp, _, err := c.Exchange(query("example.com.", miekg.TypeA, false), addr.String())
			if err == nil && (len(resp.Answer) != 1 || resp.Answer[0].(*miekg.A).A.String() != ip) {
				err = fmt.Errorf("answers %v; want %s", resp.Answer, ip)
			}
			return err
		}
	}
	testutil.Eventually(t, 5*time.Second, "answer from the first upstream", answerIs("192.0.2.1"))
	if err := os.WriteFile(path, []byte("# changed\nnameserver "+a2.String()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "answer from the second upstream after the change", answerIs("192.0.2.2"))
}

// TestReplicatedAnswers: a name added on one server is answered by the
// other's live listener once the delta arrives, and hidden when its owner
// is dead.
func TestReplicatedAnswers(t *testing.T) {
	bus := dnstest.NewBus()
	a := newServer(t, testConfig(self), bus.Transport(self))
	b := newServer(t, testConfig(other), bus.Transport(other))
	bus.Join(self, a)
	bus.Join(other, b)
	addr := runServer(t, b)
	ask := func() *miekg.Msg { return exchange(t, "udp", addr, query("app.weft.local.", miekg.TypeA, false)) }
	if resp := ask(); resp.Rcode != miekg.RcodeNameError {
		t.Fatalf("before Add: %s; want NXDOMAIN", miekg.RcodeToString[resp.Rcode])
	}
	if err := a.Add("app", mustAddr("10.32.0.5"), "c1"); err != nil {
		t.Fatal(err)
	}
	if resp := ask(); len(resp.Answer) != 1 || resp.Answer[0].(*miekg.A).A.String() != "10.32.0.5" {
		t.Fatalf("after Add on the other server: %v; want 10.32.0.5", resp)
	}
	b.SetPeers([]peer.Info{{ID: other, State: peer.Alive}, {ID: self, State: peer.Dead}})
	if resp := ask(); resp.Rcode != miekg.RcodeNameError {
		t.Errorf("owner dead: %s; want NXDOMAIN", miekg.RcodeToString[resp.Rcode])
	}
	b.SetPeers([]peer.Info{{ID: other, State: peer.Alive}, {ID: self, State: peer.Alive}})
	if resp := ask(); len(resp.Answer) != 1 {
		t.Errorf("owner back: %v; want the record again", resp)
	}
	if err := a.RemoveContainer("c1"); err != nil {
		t.Fatal(err)
	}
	if resp := ask(); resp.Rcode != miekg.RcodeNameError {
		t.Errorf("after RemoveContainer: %s; want NXDOMAIN", miekg.RcodeToString[resp.Rcode])
	}
}

func TestRunBindError(t *testing.T) {
	cfg := testConfig(self)
	cfg.Listen = []string{"192.0.2.1:5353"} // not an address of this host
	s := newServer(t, cfg, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Run(ctx); err == nil {
		t.Errorf("Run with an address not on this host = nil; want a bind error")
	}
	if err := s.SetListen([]string{"127.0.0.1:0"}); !errors.Is(err, ErrClosed) {
		t.Errorf("SetListen after Run = %v; want ErrClosed", err)
	}
}

func TestIPv6Listener(t *testing.T) {
	probe, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	probe.Close()
	s := zoneServer(t)
	runServer(t, s)
	if err := s.SetListen([]string{"[::1]:0"}); err != nil {
		t.Fatalf("SetListen [::1]:0: %v", err)
	}
	addrs := s.ListenAddrs()
	if len(addrs) != 1 || !addrs[0].Addr().Is6() {
		t.Fatalf("ListenAddrs = %v; want one IPv6 address", addrs)
	}
	for _, netw := range []string{"udp", "tcp"} {
		resp := exchange(t, netw, addrs[0], query("web.weft.local.", miekg.TypeA, false))
		if len(resp.Answer) != 2 {
			t.Errorf("over %s on %s: %v; want 2 answers", netw, addrs[0], resp)
		}
	}
}

// TestSetListenRetries: an address SetListen cannot bind yet (here: its
// TCP port is taken; in a peer: the bridge address is not on the bridge
// yet) is bound by Run as soon as it can be, without another SetListen.
func TestSetListenRetries(t *testing.T) {
	s := zoneServer(t)
	runServer(t, s)
	blocker, err := net.Listen("tcp", "127.0.0.3:0")
	if err != nil {
		t.Fatal(err)
	}
	spec := blocker.Addr().String()
	if err := s.SetListen([]string{spec}); err == nil {
		t.Fatalf("SetListen(%s) with the port taken = nil; want the bind error", spec)
	}
	if got := s.ListenAddrs(); len(got) != 0 {
		t.Fatalf("ListenAddrs = %v; want none while the port is taken", got)
	}
	blocker.Close()
	testutil.Eventually(t, 10*time.Second, spec+" to be bound after the port was freed", listening(s, 1))
	exchange(t, "tcp", netip.MustParseAddrPort(spec), query("web.weft.local.", miekg.TypeA, false))
}
