package nft_test

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/policy"
	"github.com/weftmesh/weft/policy/nft"
)

// bigCluster is the benchmark's cluster: 1,000 pods in 20 namespaces
// spread over `nodes` nodes, and 1,000 policies of the kinds clusters
// write (per namespace: a default deny, allows from pods of the
// namespace, from teams' namespaces on a named port, egress to DNS
// anywhere in prod, egress to an ipBlock with an except on a port range).
type bigCluster struct {
	namespaces []policy.Namespace
	pods       []policy.Pod
	policies   []*policy.NetworkPolicy
	raw        []*networkingv1.NetworkPolicy // the API objects of policies
	nodes      []policy.Node
}

func newBigCluster(tb testing.TB, nodes int) *bigCluster {
	tb.Helper()
	c := &bigCluster{}
	for i := range nodes {
		c.nodes = append(c.nodes, policy.Node{Name: fmt.Sprintf("n%d", i), Addrs: []netip.Addr{netip.AddrFrom4([4]byte{192, 168, 0, byte(i + 1)})}})
	}
	ports := []policy.NamedPort{{Name: "http", Port: 8080, Protocol: policy.TCP}, {Name: "metrics", Port: 9090, Protocol: policy.TCP}}
	tiers := []string{"web", "db", "cache"}
	for ns := range 20 {
		name := fmt.Sprintf("ns%d", ns)
		env := "dev"
		if ns%2 == 0 {
			env = "prod"
		}
		c.namespaces = append(c.namespaces, policy.Namespace{Name: name, Labels: map[string]string{"team": fmt.Sprintf("t%d", ns%4), "env": env}})
		for j := range 50 {
			k := ns*50 + j
			c.pods = append(c.pods, policy.Pod{Namespace: name, Name: fmt.Sprintf("pod%d", j),
				Labels: map[string]string{"app": fmt.Sprintf("app%d", j%10), "tier": tiers[j%3]},
				IP:     netip.AddrFrom4([4]byte{10, 32, byte(k / 250), byte(k%250 + 2)}),
				Node:   c.nodes[k%nodes].Name, Ports: ports})
		}
	}
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	p8080, p53, p5000, http := intstr.FromInt32(8080), intstr.FromInt32(53), intstr.FromInt32(5000), intstr.FromString("http")
	end := int32(6000)
	for ns := range 20 {
		nsName := fmt.Sprintf("ns%d", ns)
		for j := range 50 {
			np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: nsName, Name: fmt.Sprintf("np%d", j)}}
			app := map[string]string{"app": fmt.Sprintf("app%d", j%10)}
			switch j % 5 {
			case 0:
				if j == 0 { // one default deny per namespace
					np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
					break
				}
				np.Spec.PodSelector.MatchLabels = app
				np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
					From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app%d", (j+1)%10)}}}},
					Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &p8080}}}}
			case 1:
				np.Spec.PodSelector.MatchLabels = app
				np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
					From: []networkingv1.NetworkPolicyPeer{{
						NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprintf("t%d", j%4)}},
						PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "web"}}}},
					Ports: []networkingv1.NetworkPolicyPort{{Port: &http}}}}
			case 2:
				np.Spec.PodSelector.MatchLabels = app
				np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
				np.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{
					To:    []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": "prod"}}}},
					Ports: []networkingv1.NetworkPolicyPort{{Protocol: &udp, Port: &p53}}}}
			case 3:
				np.Spec.PodSelector.MatchLabels = map[string]string{"tier": tiers[j%3]}
				np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
				np.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{
					To:    []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{fmt.Sprintf("10.%d.0.0/16", 32+j%8)}}}},
					Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &p5000, EndPort: &end}}}}
			case 4:
				np.Spec.PodSelector.MatchLabels = app
				np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
				np.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{
					To:    []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "db"}}}},
					Ports: []networkingv1.NetworkPolicyPort{{Port: &http}}}}
			}
			p, err := policy.Convert(np, policy.Capabilities{})
			if err != nil {
				tb.Fatalf("Convert: %v", err)
			}
			c.policies = append(c.policies, p)
			c.raw = append(c.raw, np)
		}
	}
	return c
}

func (c *bigCluster) model() *policy.Model {
	return policy.NewModel(policy.Snapshot{Namespaces: c.namespaces, Pods: c.pods, Policies: c.policies, Nodes: c.nodes})
}

// flip changes one local pod's labels back and forth: app0 ⇄ app5.
func (c *bigCluster) flip(i int) {
	p := &c.pods[0]
	if i%2 == 0 {
		p.Labels = map[string]string{"app": "app5", "tier": p.Labels["tier"]}
	} else {
		p.Labels = map[string]string{"app": "app0", "tier": p.Labels["tier"]}
	}
}

// BenchmarkConvert: the 1,000 API objects into weft's form, as a full
// sync does once (a change converts only the changed object).
func BenchmarkConvert(b *testing.B) {
	c := newBigCluster(b, 1)
	for b.Loop() {
		for _, o := range c.raw {
			if _, err := policy.Convert(o, policy.Capabilities{}); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkCompile: the model and one node's program from the snapshot
// (policies already converted, as the daemon caches them per object
// version).
func BenchmarkCompile(b *testing.B) {
	for _, nodes := range []int{1, 10} {
		c := newBigCluster(b, nodes)
		b.Run(fmt.Sprintf("local=%d", 1000/nodes), func(b *testing.B) {
			for b.Loop() {
				if _, err := policy.Compile(c.model(), "n0"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkProgramming measures, against the kernel in a throwaway
// namespace, with 1,000 pods and 1,000 policies: a full sync (model,
// compile, one transaction creating the table), and one pod's label
// change as weft applies it (model, compile, the difference) against the
// same change applied by rewriting everything (the table replaced in one
// transaction). Latencies are per change, from the snapshot to the
// kernel's acknowledgement; p50 and p99 are reported.
func BenchmarkProgramming(b *testing.B) {
	testutil.Root(b)
	for _, nodes := range []int{1, 10} {
		c := newBigCluster(b, nodes)
		path := testutil.NetNS(b, testutil.Prefix("wpb"))
		conn, err := nft.NewNetlinkConn(path)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { conn.Close() })
		local := 1000 / nodes
		b.Run(fmt.Sprintf("local=%d/full-sync", local), func(b *testing.B) {
			var lat []time.Duration
			for b.Loop() {
				a := nft.NewApplier(conn)
				if err := a.Delete("weft-policy"); err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				p, err := policy.Compile(c.model(), "n0")
				if err != nil {
					b.Fatal(err)
				}
				if _, err := a.Apply(p); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			report(b, lat)
		})
		b.Run(fmt.Sprintf("local=%d/one-change", local), func(b *testing.B) {
			a := nft.NewApplier(conn)
			p, _ := policy.Compile(c.model(), "n0")
			if _, err := a.Apply(p); err != nil {
				b.Fatal(err)
			}
			var lat []time.Duration
			i := 0
			for b.Loop() {
				c.flip(i)
				i++
				start := time.Now()
				p, err := policy.Compile(c.model(), "n0")
				if err != nil {
					b.Fatal(err)
				}
				lines, err := a.Apply(p)
				if err != nil || len(lines) == 0 {
					b.Fatalf("Apply = %d lines, %v", len(lines), err)
				}
				lat = append(lat, time.Since(start))
			}
			report(b, lat)
		})
		b.Run(fmt.Sprintf("local=%d/one-change-rewrite-all", local), func(b *testing.B) {
			var lat []time.Duration
			i := 0
			for b.Loop() {
				c.flip(i)
				i++
				start := time.Now()
				p, err := policy.Compile(c.model(), "n0")
				if err != nil {
					b.Fatal(err)
				}
				ops := append([]nft.Op{{Kind: nft.DelTable}}, nft.Plan(nil, p)...)
				if err := conn.Exec(p.Table, ops); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			report(b, lat)
		})
	}
}

// report adds p50 and p99 in milliseconds and, with WEFT_BENCH_VERBOSE,
// logs them.
func report(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	q := func(f float64) float64 {
		return float64(lat[min(len(lat)-1, int(f*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	if os.Getenv("WEFT_BENCH_VERBOSE") != "" {
		b.Logf("n=%d p50=%.1fms p99=%.1fms max=%v", len(lat), q(0.5), q(0.99), lat[len(lat)-1])
	}
}
