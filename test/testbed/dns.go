package testbed

// Helpers for the DNS and status end-to-end tests: running Go code inside a
// namespace of the bed (dial, listen, an HTTP client, a TCP forwarder from
// the root namespace), a tiny upstream DNS server the peers forward to, and
// dig with a parsed answer.
//
//	ns, addr := bed.AddInternet()
//	up := testbed.StartUpstreamDNS(t, ns, netip.AddrPortFrom(addr, 53), map[string]netip.Addr{"www.example.test.": a})
//	ans, err := testbed.Dig(pod.Exec, resolver, "www.example.test")
//	conn, err := testbed.DialIn(ctx, h.NS, "tcp", h.Addr.String()+":6784")
//	page := "http://" + h.Forward(t, h.Addr.String()+":6784") + "/" // from the root namespace

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	miekg "github.com/miekg/dns"
	"github.com/vishvananda/netns"
)

// InNS runs fn on a fresh OS thread that has entered the named network
// namespace (under /var/run/netns). The thread is never returned to the Go
// scheduler: it ends with fn's goroutine, so no other goroutine ever runs
// in ns by accident. Sockets fn creates stay in ns and may be used from
// any goroutine afterwards.
func InNS(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with this goroutine
		h, err := netns.GetFromName(ns)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", ns, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", ns, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// DialIn dials addr (an IP literal with port) from inside namespace ns.
func DialIn(ctx context.Context, ns, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := InNS(ns, func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s %s in %s: %w", network, addr, ns, err)
	}
	return c, nil
}

// UpstreamDNS is a tiny DNS server standing in for an operator's resolver:
// it answers A questions for its names, NXDOMAIN for the rest, and counts
// the queries it gets. It listens on UDP and TCP inside a bed namespace.
type UpstreamDNS struct {
	Addr    netip.AddrPort
	answers map[string]netip.Addr // lower-case FQDN → address
	silent  atomic.Bool           // true: read queries, answer nothing
	queries atomic.Int64
	servers []*miekg.Server
	stop    sync.Once
}

// StartUpstreamDNS starts an UpstreamDNS in namespace ns on addr; t's
// cleanup stops it.
func StartUpstreamDNS(t testing.TB, ns string, addr netip.AddrPort, answers map[string]netip.Addr) *UpstreamDNS {
	t.Helper()
	u := &UpstreamDNS{Addr: addr, answers: map[string]netip.Addr{}}
	for n, a := range answers {
		u.answers[strings.ToLower(miekg.Fqdn(n))] = a
	}
	var pc net.PacketConn
	var ln net.Listener
	err := InNS(ns, func() error {
		var err error
		if pc, err = net.ListenPacket("udp", addr.String()); err != nil {
			return err
		}
		if ln, err = net.Listen("tcp", addr.String()); err != nil {
			pc.Close()
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatalf("upstream DNS on %s in %s: %v", addr, ns, err)
	}
	for _, s := range []*miekg.Server{{PacketConn: pc, Handler: u}, {Listener: ln, Handler: u}} {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		go func() { _ = s.ActivateAndServe() }()
		<-started
		u.servers = append(u.servers, s)
	}
	t.Cleanup(u.Stop)
	return u
}

// ServeDNS implements miekg's Handler.
func (u *UpstreamDNS) ServeDNS(w miekg.ResponseWriter, r *miekg.Msg) {
	u.queries.Add(1)
	if u.silent.Load() || len(r.Question) != 1 {
		return
	}
	m := new(miekg.Msg)
	m.SetReply(r)
	m.Authoritative = true
	q := r.Question[0]
	a, ok := u.answers[strings.ToLower(q.Name)]
	switch {
	case !ok:
		m.Rcode = miekg.RcodeNameError
	case q.Qtype == miekg.TypeA:
		m.Answer = append(m.Answer, &miekg.A{
			Hdr: miekg.RR_Header{Name: q.Name, Rrtype: miekg.TypeA, Class: miekg.ClassINET, Ttl: 30},
			A:   a.AsSlice(),
		})
	}
	_ = w.WriteMsg(m)
}

// SetSilent makes the server swallow queries without answering (a
// blackholed resolver) or answer again.
func (u *UpstreamDNS) SetSilent(on bool) { u.silent.Store(on) }

// Queries returns how many queries the server has received.
func (u *UpstreamDNS) Queries() int64 { return u.queries.Load() }

// Stop closes the server's sockets: queries then meet a closed port.
func (u *UpstreamDNS) Stop() {
	u.stop.Do(func() {
		for _, s := range u.servers {
			_ = s.Shutdown()
		}
	})
}

// DigAnswer is what dig printed for one A question.
type DigAnswer struct {
	Status string       // NOERROR, NXDOMAIN, SERVFAIL, ...
	Addrs  []netip.Addr // the A records of the answer section, in order
	Took   time.Duration
}

var digStatus = regexp.MustCompile(`status: ([A-Z]+)`)

// Dig asks server port 53 for the A records of name with the real dig
// binary, run by run (e.g. Pod.Exec or Host.Run): one try, 5 s timeout.
func Dig(run func(argv ...string) (string, error), server netip.Addr, name string) (DigAnswer, error) {
	start := time.Now()
	out, err := run("dig", "@"+server.String(), "-p", "53", "+tries=1", "+time=5", "+noall", "+comments", "+answer", name, "A")
	ans := DigAnswer{Took: time.Since(start)}
	if err != nil {
		return ans, fmt.Errorf("dig @%s %s: %v: %s", server, name, err, out)
	}
	m := digStatus.FindStringSubmatch(out)
	if m == nil {
		return ans, fmt.Errorf("dig @%s %s: no status in output: %s", server, name, out)
	}
	ans.Status = m[1]
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 5 && !strings.HasPrefix(f[0], ";") && f[3] == "A" {
			a, err := netip.ParseAddr(f[4])
			if err != nil {
				return ans, fmt.Errorf("dig @%s %s: bad A record %q", server, name, line)
			}
			ans.Addrs = append(ans.Addrs, a)
		}
	}
	return ans, nil
}

// Nameserver returns the first DNS server of the pod's CNI result (the
// bridge address of its host).
func (p *Pod) Nameserver() (netip.Addr, error) {
	d, _ := p.Result["dns"].(map[string]any)
	ns, _ := d["nameservers"].([]any)
	if len(ns) == 0 {
		return netip.Addr{}, fmt.Errorf("CNI result of %s has no dns.nameservers: %v", p.NS, p.Result)
	}
	s, _ := ns[0].(string)
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("CNI result of %s: nameserver %q: %w", p.NS, s, err)
	}
	return a, nil
}

// Forward listens on 127.0.0.1:0 in the test's (root) namespace and
// splices every connection to addr, dialled inside h's namespace, so that a
// browser on this machine reaches the peer's read-only listener. It returns
// the local address; t's cleanup closes the listener and every connection
// and waits for the goroutines.
func (h *Host) Forward(t testing.TB, addr string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("forwarder listen: %v", err)
	}
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex // guards following
		closed bool
		conns  = map[net.Conn]bool{}
	)
	track := func(c net.Conn) bool {
		mu.Lock()
		defer mu.Unlock()
		if closed {
			c.Close()
			return false
		}
		conns[c] = true
		return true
	}
	splice := func(dst, src net.Conn, done chan<- struct{}) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !track(c) {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				u, err := DialIn(ctx, h.NS, "tcp", addr)
				cancel()
				if err != nil || !track(u) {
					return
				}
				defer u.Close()
				done := make(chan struct{}, 2)
				go splice(u, c, done)
				go splice(c, u, done)
				<-done
				<-done
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		closed = true
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// HTTPClient returns an HTTP client whose connections are dialled inside
// h's namespace.
func (h *Host) HTTPClient() *http.Client {
	return &http.Client{
		Timeout: 20 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return DialIn(ctx, h.NS, network, addr)
			},
		},
	}
}
