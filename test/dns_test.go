package test

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/test/testbed"
)

// propagation is issue 6's bound for a DNS change to reach every peer.
const propagation = 2 * time.Second

// mustWeft runs the weft CLI against h's peer and fails t on error.
func mustWeft(t *testing.T, h *testbed.Host, args ...string) string {
	t.Helper()
	out, stderr, err := h.Weft(args...)
	if err != nil {
		t.Fatalf("weft %v on %s: %v: %s", args, h.Name, err, stderr)
	}
	return out
}

// bridgeOf returns the bridge address h's peer reports for itself (its DNS
// server listens there, port 53).
func bridgeOf(t *testing.T, h *testbed.Host) netip.Addr {
	t.Helper()
	var a netip.Addr
	testutil.Eventually(t, 30*time.Second, h.Name+" to report its bridge address", func() error {
		st, err := h.Status()
		if err != nil {
			return err
		}
		for _, p := range st.Peers {
			if p.Self {
				if a, err = netip.ParseAddr(p.Bridge); err != nil {
					return fmt.Errorf("bridge %q: %v", p.Bridge, err)
				}
				return nil
			}
		}
		return fmt.Errorf("no self entry in the status of %s", h.Name)
	})
	return a
}

// resolver is one place a test asks: dig run by run against server port 53.
type resolver struct {
	what   string
	run    func(argv ...string) (string, error)
	server netip.Addr
}

func (r resolver) dig(name string) (testbed.DigAnswer, error) {
	return testbed.Dig(r.run, r.server, name)
}

// wantAddrs checks an answer is NOERROR with exactly addrs (any order).
func wantAddrs(addrs ...netip.Addr) func(testbed.DigAnswer) error {
	want := slices.Clone(addrs)
	slices.SortFunc(want, netip.Addr.Compare)
	return func(a testbed.DigAnswer) error {
		got := slices.Clone(a.Addrs)
		slices.SortFunc(got, netip.Addr.Compare)
		if a.Status != "NOERROR" || !slices.Equal(got, want) {
			return fmt.Errorf("got %s %v; want NOERROR %v", a.Status, a.Addrs, want)
		}
		return nil
	}
}

// wantStatus checks an answer's rcode (and that NXDOMAIN/SERVFAIL carry no address).
func wantStatus(status string) func(testbed.DigAnswer) error {
	return func(a testbed.DigAnswer) error {
		if a.Status != status || len(a.Addrs) != 0 {
			return fmt.Errorf("got %s %v; want %s", a.Status, a.Addrs, status)
		}
		return nil
	}
}

// waitDig polls every resolver for name until each answer passes check, or
// d passes; it returns how long that took.
func waitDig(t *testing.T, d time.Duration, rs []resolver, name string, check func(testbed.DigAnswer) error) time.Duration {
	t.Helper()
	start := time.Now()
	pending := slices.Clone(rs)
	testutil.Eventually(t, d, fmt.Sprintf("%d resolvers to answer %s", len(rs), name), func() error {
		var last error
		next := pending[:0]
		for _, r := range pending {
			a, err := r.dig(name)
			if err == nil {
				err = check(a)
			}
			if err != nil {
				last = fmt.Errorf("%s: %s: %w", r.what, name, err)
				next = append(next, r)
			}
		}
		pending = next
		return last
	})
	return time.Since(start)
}

// within reports an acceptance bound that took longer than allowed.
func within(t *testing.T, what string, took, bound time.Duration) {
	t.Helper()
	t.Logf("%s: %v", what, took.Round(time.Millisecond))
	if took > bound {
		t.Errorf("%s took %v; want at most %v", what, took.Round(time.Millisecond), bound)
	}
}

// TestDNSAcrossMesh covers issue 6's acceptance 1-3 on a 3-host bed:
// names added anywhere resolve with dig from a pod on another host, removals
// and dead owners hide them, pod names come from weft-cni, and names
// outside the domain go to an upstream server running inside the bed.
func TestDNSAcrossMesh(t *testing.T) {
	bed := testbed.New(t, 3)
	bed.DumpLogsOnFailure(t)
	h1, h2, h3 := bed.Hosts[0], bed.Hosts[1], bed.Hosts[2]

	inetNS, inetAddr := bed.AddInternet()
	outside := netip.MustParseAddr("198.51.100.7")
	up := testbed.StartUpstreamDNS(t, inetNS, netip.AddrPortFrom(inetAddr, 53),
		map[string]netip.Addr{"www.example.test.": outside})
	upstream := "--dns-upstream=" + up.Addr.String()

	h1.Launch(t, "--insecure", upstream)
	h2.Launch(t, "--insecure", upstream, h1.Addr.String())
	h3.Launch(t, "--insecure", upstream, h1.Addr.String())
	waitAlive(t, bed.Hosts, 3, 30*time.Second)

	p1 := h1.AddPod(t, "p1")
	p3 := h3.AddPod(t, "p3")
	ns3, err := p3.Nameserver()
	if err != nil {
		t.Fatal(err)
	}
	if b := bridgeOf(t, h3); ns3 != b {
		t.Errorf("pod on h3 got nameserver %s; want h3's bridge %s", ns3, b)
	}
	pod := resolver{"pod on h3", p3.Exec, ns3}
	var hosts []resolver // each host asking its own DNS server on its bridge
	for _, h := range bed.Hosts {
		hosts = append(hosts, resolver{"host " + h.Name, h.Run, bridgeOf(t, h)})
	}
	everywhere := append([]resolver{pod}, hosts...)

	// The pod's resolver answers at all (its own name, registered by weft-cni).
	waitDig(t, 30*time.Second, []resolver{pod}, "p3.h3.weft.local", wantAddrs(p3.Addr.Addr()))

	a1 := p1.Addr.Addr()
	a2 := netip.MustParseAddr("10.32.200.2")
	t.Run("added on h1 resolves from a pod on h3", func(t *testing.T) {
		mustWeft(t, h1, "dns", "add", "web", a1.String())
		took := waitDig(t, 20*time.Second, []resolver{pod}, "web.weft.local", wantAddrs(a1))
		within(t, "name added on h1 resolvable from the pod on h3", took, propagation)
		// Single-label names are completed, names are case-insensitive.
		waitDig(t, 5*time.Second, []resolver{pod}, "WEB.Weft.Local.", wantAddrs(a1))
	})

	t.Run("pod name registered by weft-cni", func(t *testing.T) {
		waitDig(t, 10*time.Second, []resolver{pod}, "p1.h1.weft.local", wantAddrs(a1))
	})

	t.Run("name on two hosts returns both", func(t *testing.T) {
		mustWeft(t, h1, "dns", "add", "multi", a1.String())
		mustWeft(t, h2, "dns", "add", "multi.weft.local", a2.String())
		took := waitDig(t, 20*time.Second, everywhere, "multi.weft.local", wantAddrs(a1, a2))
		within(t, "name on h1 and h2 resolvable with both addresses everywhere", took, propagation)
	})

	t.Run("removed is NXDOMAIN everywhere", func(t *testing.T) {
		mustWeft(t, h1, "dns", "remove", "web")
		took := waitDig(t, 20*time.Second, everywhere, "web.weft.local", wantStatus("NXDOMAIN"))
		within(t, "removed name NXDOMAIN on every peer", took, propagation)
		mustWeft(t, h1, "dns", "remove", "multi", a1.String())
		took = waitDig(t, 20*time.Second, everywhere, "multi.weft.local", wantAddrs(a2))
		within(t, "one address of two removed on every peer", took, propagation)
	})

	t.Run("upstream answers names outside the domain", func(t *testing.T) {
		before := up.Queries()
		waitDig(t, 10*time.Second, []resolver{pod}, "www.example.test", wantAddrs(outside))
		waitDig(t, 10*time.Second, []resolver{pod}, "nothing.example.test", wantStatus("NXDOMAIN"))
		if n := up.Queries() - before; n < 2 {
			t.Errorf("upstream got %d queries; want the 2 forwarded ones", n)
		}
		// In the domain is never forwarded.
		before = up.Queries()
		waitDig(t, 10*time.Second, []resolver{pod}, "nobody.weft.local", wantStatus("NXDOMAIN"))
		if n := up.Queries() - before; n != 0 {
			t.Errorf("an unknown name in the domain was forwarded upstream (%d queries)", n)
		}

		// Blackholed upstream: SERVFAIL within the forward timeout (2 s).
		up.SetSilent(true)
		a, err := pod.dig("silent.example.test")
		if err != nil {
			t.Fatal(err)
		}
		if err := wantStatus("SERVFAIL")(a); err != nil {
			t.Errorf("blackholed upstream: %v", err)
		}
		within(t, "SERVFAIL with a blackholed upstream (dig round trip)", a.Took, 3*time.Second)

		// Upstream down (port closed): SERVFAIL.
		up.Stop()
		a, err = pod.dig("down.example.test")
		if err != nil {
			t.Fatal(err)
		}
		if err := wantStatus("SERVFAIL")(a); err != nil {
			t.Errorf("upstream down: %v", err)
		}
		within(t, "SERVFAIL with the upstream down (dig round trip)", a.Took, 3*time.Second)
		// Local names are unaffected.
		waitDig(t, 5*time.Second, []resolver{pod}, "p1.h1.weft.local", wantAddrs(a1))
	})

	t.Run("no answer on the underlay address", func(t *testing.T) {
		// Not an open resolver: only the bridge and --dns-listen addresses.
		if a, err := testbed.Dig(h1.Run, h3.Addr, "p1.h1.weft.local"); err == nil {
			t.Errorf("h3 answered a DNS query on its underlay address %s: %s %v", h3.Addr, a.Status, a.Addrs)
		}
	})

	t.Run("names of a killed peer keep answering while it owns its space", func(t *testing.T) {
		mustWeft(t, h1, "dns", "add", "web2", a1.String())
		mustWeft(t, h1, "dns", "add", "multi", a1.String())
		others := []resolver{pod, hosts[1], hosts[2]}
		waitDig(t, 20*time.Second, others, "web2.weft.local", wantAddrs(a1))
		waitDig(t, 20*time.Second, others, "multi.weft.local", wantAddrs(a1, a2))

		// h1's control plane dies; its host (and so its pod p1, still
		// routed everywhere) runs on: its names keep answering.
		h1.Kill()
		killed := time.Now()
		testutil.Eventually(t, 60*time.Second, "h3 to report h1 dead", func() error {
			if st, _ := peerState(t, h3, h1.Name); st != "dead" {
				return fmt.Errorf("h3 sees h1 %q", st)
			}
			return nil
		})
		t.Logf("after kill -9 of h1: h3 reports it dead after %v", time.Since(killed).Round(time.Millisecond))
		for _, r := range others {
			for name, want := range map[string][]netip.Addr{"web2.weft.local": {a1}, "p1.h1.weft.local": {a1}, "multi.weft.local": {a1, a2}} {
				a, err := r.dig(name)
				if err != nil {
					t.Fatal(err)
				}
				if err := wantAddrs(want...)(a); err != nil {
					t.Errorf("%s: %s with h1 dead but owning its space: %v", r.what, name, err)
				}
			}
		}

		h1.Launch(t, "--insecure", upstream, h2.Addr.String())
		relaunched := time.Now()
		waitAlive(t, bed.Hosts, 3, 45*time.Second)
		waitDig(t, 30*time.Second, others, "web2.weft.local", wantAddrs(a1))
		waitDig(t, 10*time.Second, others, "p1.h1.weft.local", wantAddrs(a1))
		waitDig(t, 10*time.Second, others, "multi.weft.local", wantAddrs(a1, a2))
		t.Logf("relaunched h1: its names resolve on h2 and h3 after %v", time.Since(relaunched).Round(time.Millisecond))
		// And h1 itself answers them after the restart.
		waitDig(t, 10*time.Second, []resolver{hosts[0]}, "web2.weft.local", wantAddrs(a1))
	})
}
