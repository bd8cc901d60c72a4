package nft_test

// The datapath benchmark (root, WEFT_POLICY_PERF=1): on the datapath bed,
// x/a → x/b TCP throughput (iperf3, one stream) and new-connection rate
// (connect + RST, two clients) with 100 policies that select both pods
// against none, in interleaved rounds of the same run. Every new
// connection of the pair walks all of them: 99 policies whose rules do
// not match the pair's flow (another port, another peer) come before the
// one that allows it, in x/a's egress chain and again in x/b's ingress
// chain. Packets of established connections are accepted by the
// conntrack rule of the forward chain, after the anti-spoofing check and
// before any pod chain. A third configuration, no policy and no
// anti-spoofing rule, shows what that rule costs. About 3 minutes.

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/policy"
)

// pairPolicies are 100 policies of namespace x that select x/a and x/b
// in both directions; only the last (np99) allows x/a → x/b, on TCP 80
// and 5201 (iperf3).
func pairPolicies() []*networkingv1.NetworkPolicy {
	tcp := corev1.ProtocolTCP
	both := []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
	pair := metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "pod", Operator: metav1.LabelSelectorOpIn, Values: []string{"a", "b"}}}}
	port := func(p int) networkingv1.NetworkPolicyPort {
		v := intstr.FromInt(p)
		return networkingv1.NetworkPolicyPort{Protocol: &tcp, Port: &v}
	}
	var out []*networkingv1.NetworkPolicy
	for i := range 99 {
		out = append(out, &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: fmt.Sprintf("np%02d", i)},
			Spec: networkingv1.NetworkPolicySpec{PodSelector: pair, PolicyTypes: both,
				Ingress: []networkingv1.NetworkPolicyIngressRule{{
					From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"ns": "y"}},
						PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"pod": "a"}}}},
					Ports: []networkingv1.NetworkPolicyPort{port(1000 + i)}}},
				Egress: []networkingv1.NetworkPolicyEgressRule{{
					To:    []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: fmt.Sprintf("192.168.100.%d/32", i)}}},
					Ports: []networkingv1.NetworkPolicyPort{port(2000 + i)}}}}})
	}
	same := func(pod string) []networkingv1.NetworkPolicyPeer {
		return []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"pod": pod}}}}
	}
	return append(out, &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "np99"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: pair, PolicyTypes: both,
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: same("a"), Ports: []networkingv1.NetworkPolicyPort{port(80), port(5201)}}},
			Egress:  []networkingv1.NetworkPolicyEgressRule{{To: same("b"), Ports: []networkingv1.NetworkPolicyPort{port(80), port(5201)}}}}})
}

func TestDatapathPerf(t *testing.T) {
	if os.Getenv("WEFT_POLICY_PERF") == "" {
		t.Skip("set WEFT_POLICY_PERF=1 to run the datapath benchmark (about 3 minutes)")
	}
	testutil.Root(t, "nsenter", "iperf3")
	rounds, dur := 7, 3*time.Second
	if v, err := strconv.Atoi(os.Getenv("WEFT_POLICY_PERF_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	b := newDPBed(t)
	a := b.applier(t)
	xa, xb := b.pods[0], b.pods[1]

	// The programs, and what they say about the pair. The third has
	// neither policies nor the anti-spoofing rule: what that rule costs.
	none, err := bedConfig().Compile(b.model(t, nil), "n1")
	if err != nil {
		t.Fatal(err)
	}
	bare := bedConfig()
	bare.PodIfPrefix = ""
	noSpoofCheck, err := bare.Compile(b.model(t, nil), "n1")
	if err != nil {
		t.Fatal(err)
	}
	m := b.model(t, pairPolicies())
	full, err := bedConfig().Compile(m, "n1")
	if err != nil {
		t.Fatal(err)
	}
	for _, port := range []uint16{80, 5201} {
		if v := policy.Evaluate(m, m.Endpoint(xa.IP), m.Endpoint(xb.IP), port, policy.TCP); !v.Allowed() {
			t.Fatalf("x/a → x/b %d/TCP under the 100 policies: %v; want allowed", port, v)
		}
	}
	if v := policy.Evaluate(m, m.Endpoint(xa.IP), m.Endpoint(xb.IP), 81, policy.TCP); v.Allowed() {
		t.Fatalf("x/a → x/b 81/TCP under the 100 policies: %v; want denied", v)
	}
	for _, ch := range full.Chains {
		if ch.Name == "egress-"+xa.IP.String() || ch.Name == "ingress-"+xb.IP.String() {
			t.Logf("chain %s: %d rules", ch.Name, len(ch.Rules))
		}
	}

	// iperf3's server in x/b.
	srv := exec.Command("nsenter", "--net="+b.nsOf["x/b"], "iperf3", "-s")
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	dst := net.JoinHostPort(xb.IP.String(), "5201")
	if err := testutil.Poll(10*time.Second, func() error {
		return testutil.InNetNS(b.nsOf["x/a"], func() error {
			c, err := net.DialTimeout("tcp4", dst, time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
	}); err != nil {
		t.Fatalf("iperf3 server in x/b: %v", err)
	}

	configs := []struct {
		name string
		prog *policy.Program
	}{{"none", none}, {"100 policies", full}, {"none, no anti-spoofing rule", noSpoofCheck}}
	// measure runs f rounds times under each program, back to back in an
	// order that rotates with the round, and returns the samples of each
	// (indexed as configs).
	measure := func(what string, rounds int, f func() (float64, error)) [][]float64 {
		out := make([][]float64, len(configs))
		for r := range rounds {
			for k := range configs {
				i := (k + r) % len(configs)
				cfg := configs[i]
				if _, err := a.Apply(cfg.prog); err != nil {
					t.Fatalf("apply %s: %v", cfg.name, err)
				}
				if err := handleAt(t, b.node).ConntrackTableFlush(netlink.ConntrackTable); err != nil {
					t.Fatalf("conntrack flush: %v", err)
				}
				through, _ := probe(b.nsOf["x/a"], xb.IP, 81, policy.TCP, 300*time.Millisecond)
				if want := i != 1; through != want {
					t.Fatalf("%s: x/a → x/b 81/TCP through=%v; want %v (the program is not what the round measures)", cfg.name, through, want)
				}
				v, err := f()
				if err != nil {
					t.Fatal(err)
				}
				out[i] = append(out[i], v)
			}
			t.Logf("%s, round %d: %.2f with 100 policies, %.2f without, %.2f without the anti-spoofing rule either", what, r, out[1][r], out[0][r], out[2][r])
		}
		return out
	}
	gbps := measure("TCP Gbit/s", rounds, func() (float64, error) { return iperf(b.nsOf["x/a"], xb.IP, dur) })
	cps := measure("new connections/s", 3*rounds, func() (float64, error) {
		return connRate(b.nsOf["x/a"], netip.AddrPortFrom(xb.IP, 80), 2, time.Second)
	})

	// Medians of each configuration, and the median of the rounds' own
	// ratios (a round's configurations ran back to back, so the
	// machine's load drifts less between them).
	med := func(v []float64) float64 {
		v = slices.Clone(v)
		slices.Sort(v)
		return v[len(v)/2]
	}
	ratio := func(s [][]float64, i, j int) (float64, float64) {
		var rs []float64
		for r := range s[i] {
			rs = append(rs, s[i][r]/s[j][r])
		}
		return med(s[i]) / med(s[j]), med(rs)
	}
	for _, m := range []struct {
		what, unit, target string
		s                  [][]float64
	}{
		{"TCP throughput (iperf3, 1 stream, 3 s rounds)", "Gbit/s", ">= 0.95x", gbps},
		{"new connections (2 clients, 1 s rounds)", "/s", ">= 0.90x", cps},
	} {
		r, rr := ratio(m.s, 1, 0)
		t.Logf("%s, %d interleaved rounds: median %.2f %s with 100 policies, %.2f without: %.3fx; median of the rounds' ratios %.3fx (target %s)",
			m.what, len(m.s[0]), med(m.s[1]), m.unit, med(m.s[0]), r, rr, m.target)
		r, rr = ratio(m.s, 0, 2)
		t.Logf("%s: without policies, the anti-spoofing rule costs: %.2f %s with it, %.2f without: %.3fx; median of the rounds' ratios %.3fx",
			m.what, med(m.s[0]), m.unit, med(m.s[2]), r, rr)
	}
}

// iperf runs one iperf3 TCP stream from the namespace at path to dst for
// d and returns the receiver's rate in Gbit/s.
func iperf(path string, dst netip.Addr, d time.Duration) (float64, error) {
	out, err := exec.Command("nsenter", "--net="+path, "iperf3", "-c", dst.String(), "-J",
		"-t", strconv.Itoa(int(d.Seconds()))).Output()
	if err != nil {
		return 0, fmt.Errorf("iperf3 -c %v: %w: %s", dst, err, out)
	}
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return 0, fmt.Errorf("iperf3 output: %w", err)
	}
	return r.End.SumReceived.BitsPerSecond / 1e9, nil
}

// connRate opens TCP connections from the namespace at path to dst with
// workers clients for d, each closed with a reset (no TIME_WAIT, so the
// ephemeral ports last), and returns the completed handshakes per second.
func connRate(path string, dst netip.AddrPort, workers int, d time.Duration) (float64, error) {
	var n atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	deadline := time.Now().Add(d)
	start := time.Now()
	for range workers {
		wg.Go(func() {
			errs <- testutil.InNetNS(path, func() error {
				for time.Now().Before(deadline) {
					c, err := net.DialTimeout("tcp4", dst.String(), time.Second)
					if err != nil {
						return fmt.Errorf("connect %v: %w", dst, err)
					}
					_ = c.(*net.TCPConn).SetLinger(0)
					c.Close()
					n.Add(1)
				}
				return nil
			})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return 0, err
		}
	}
	return float64(n.Load()) / time.Since(start).Seconds(), nil
}
