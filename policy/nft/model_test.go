package nft_test

import (
	"fmt"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weftmesh/weft/policy"
	"github.com/weftmesh/weft/policy/nft"
)

// cluster is a small cluster for the applier's tests: node n1 with pods
// x/a, x/b, y/d, node n2 with x/c, policies of every kind of rule.
type cluster struct {
	pods     []policy.Pod
	policies []*networkingv1.NetworkPolicy
}

func newCluster() *cluster {
	web := []policy.NamedPort{{Name: "http", Port: 8080, Protocol: policy.TCP}, {Name: "dns", Port: 53, Protocol: policy.UDP}}
	pod := func(ns, name, node string, ip string, kv ...string) policy.Pod {
		l := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			l[kv[i]] = kv[i+1]
		}
		return policy.Pod{Namespace: ns, Name: name, Labels: l, IP: netip.MustParseAddr(ip), Node: node, Ports: web}
	}
	tcp, sctp := corev1.ProtocolTCP, corev1.ProtocolSCTP
	p80, p81, named := intstr.FromInt32(80), intstr.FromInt32(81), intstr.FromString("http")
	end := int32(90)
	return &cluster{
		pods: []policy.Pod{
			pod("x", "a", "n1", "10.32.0.10", "app", "web"),
			pod("x", "b", "n1", "10.32.0.11", "app", "db"),
			pod("x", "c", "n2", "10.32.1.10", "app", "web"),
			pod("y", "d", "n1", "10.32.0.12", "app", "client"),
		},
		policies: []*networkingv1.NetworkPolicy{
			{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "web-from-clients"}, Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{
					From: []networkingv1.NetworkPolicyPeer{
						{NamespaceSelector: &metav1.LabelSelector{}, PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}}},
						{IPBlock: &networkingv1.IPBlock{CIDR: "192.168.0.0/16", Except: []string{"192.168.1.0/24", "192.168.7.7/32"}}},
					},
					Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &p80, EndPort: &end}, {Port: &named}, {Protocol: &sctp, Port: &p81}},
				}},
			}},
			{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "db-egress"}, Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
				Egress: []networkingv1.NetworkPolicyEgressRule{
					{To: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}},
						Ports: []networkingv1.NetworkPolicyPort{{Port: &named}}},
					{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0", Except: []string{"10.0.0.0/8"}}}}},
				},
			}},
			{ObjectMeta: metav1.ObjectMeta{Namespace: "y", Name: "deny-all"}, Spec: networkingv1.NetworkPolicySpec{
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			}},
		},
	}
}

func (c *cluster) pod(name string) *policy.Pod {
	for i := range c.pods {
		if c.pods[i].Namespace+"/"+c.pods[i].Name == name {
			return &c.pods[i]
		}
	}
	panic("no pod " + name)
}

func (c *cluster) model(t testing.TB) *policy.Model {
	t.Helper()
	var nps []*policy.NetworkPolicy
	for _, o := range c.policies {
		np, _ := policy.Convert(o, policy.Capabilities{})
		if np == nil {
			t.Fatalf("Convert(%s) = nil", o.Name)
		}
		nps = append(nps, np)
	}
	return policy.NewModel(policy.Snapshot{Pods: c.pods, Policies: nps, Nodes: []policy.Node{
		{Name: "n1", Addrs: []netip.Addr{netip.MustParseAddr("10.32.0.1")}},
		{Name: "n2", Addrs: []netip.Addr{netip.MustParseAddr("10.32.1.1")}},
	}})
}

func (c *cluster) program(t testing.TB, table string) *policy.Program {
	t.Helper()
	cfg := policy.DefaultConfig()
	cfg.Table = table
	p, err := cfg.Compile(c.model(t), "n1")
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return p
}

// mustApply applies p and fails the test on an error.
func mustApply(t *testing.T, a *nft.Applier, p *policy.Program) []string {
	t.Helper()
	lines, err := a.Apply(p)
	if err != nil {
		t.Fatalf("Apply: %v\n%s", err, fmt.Sprint(lines))
	}
	return lines
}
