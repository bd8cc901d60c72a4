package kube

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/policy"
)

// pod builds a Pod object on node n1 with labels "k=v" and named ports
// "name/port/proto".
func pod(ns, name, ip string, lbls map[string]string, ports ...corev1.ContainerPort) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + ns + "-" + name),
		Labels: lbls, CreationTimestamp: metav1.NewTime(created),
		Annotations: map[string]string{"big": "annotation"}}}
	p.Spec.NodeName = "n1"
	p.Spec.Containers = []corev1.Container{{Name: "c", Image: "registry.example/app:1", Ports: ports,
		Env: []corev1.EnvVar{{Name: "A", Value: "b"}}}}
	p.Status.Phase = corev1.PodRunning
	if ip != "" {
		p.Status.PodIP = ip
		p.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	return p
}

func TestPodOf(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	dual := pod("x", "dual", "", nil)
	dual.Status.PodIPs = []corev1.PodIP{{IP: "fd00::5"}, {IP: "10.32.0.5"}}
	sidecar := pod("x", "side", "10.32.0.6", nil)
	sidecar.Spec.InitContainers = []corev1.Container{
		{Name: "init", Ports: []corev1.ContainerPort{{Name: "init-port", ContainerPort: 9}}},
		{Name: "proxy", RestartPolicy: &always, Ports: []corev1.ContainerPort{{Name: "proxy", ContainerPort: 15001}}},
	}
	done := pod("x", "done", "10.32.0.7", nil)
	done.Status.Phase = corev1.PodSucceeded
	host := pod("x", "host", "192.168.79.11", nil)
	host.Spec.HostNetwork = true
	gone := pod("x", "gone", "10.32.0.8", nil)
	gone.DeletionTimestamp = &metav1.Time{Time: created.Add(time.Minute)}
	tests := []struct {
		name string
		in   *corev1.Pod
		want Pod
	}{
		{"named ports, protocol defaults to TCP, unnamed left out", pod("x", "a", "10.32.0.2", map[string]string{"pod": "a"},
			corev1.ContainerPort{Name: "serve-80-tcp", ContainerPort: 80},
			corev1.ContainerPort{Name: "serve-80-udp", ContainerPort: 80, Protocol: corev1.ProtocolUDP},
			corev1.ContainerPort{ContainerPort: 8080}),
			Pod{Namespace: "x", Name: "a", Labels: map[string]string{"pod": "a"}, Node: "n1", IP: netip.MustParseAddr("10.32.0.2"),
				Created: created, Ports: []policy.NamedPort{{Name: "serve-80-tcp", Port: 80, Protocol: policy.TCP},
					{Name: "serve-80-udp", Port: 80, Protocol: policy.UDP}}}},
		{"no address yet", pod("x", "new", "", nil), Pod{Namespace: "x", Name: "new", Node: "n1", Created: created}},
		{"IPv4 preferred", dual, Pod{Namespace: "x", Name: "dual", Node: "n1", IP: netip.MustParseAddr("10.32.0.5"), Created: created}},
		{"sidecar ports count, init containers' not", sidecar, Pod{Namespace: "x", Name: "side", Node: "n1",
			IP: netip.MustParseAddr("10.32.0.6"), Created: created, Ports: []policy.NamedPort{{Name: "proxy", Port: 15001, Protocol: policy.TCP}}}},
		{"finished", done, Pod{Namespace: "x", Name: "done", Node: "n1", IP: netip.MustParseAddr("10.32.0.7"), Created: created, Finished: true}},
		{"host network", host, Pod{Namespace: "x", Name: "host", Node: "n1", IP: netip.MustParseAddr("192.168.79.11"), Created: created, HostNetwork: true}},
		{"deleting", gone, Pod{Namespace: "x", Name: "gone", Node: "n1", IP: netip.MustParseAddr("10.32.0.8"), Created: created, Deleting: true}},
	}
	opts := cmp.Options{cmpopts.EquateComparable(netip.Addr{}), cmpopts.EquateEmpty()}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, podOf(tt.in), opts); diff != "" {
			t.Errorf("%s: podOf (-want +got):\n%s", tt.name, diff)
		}
		trimmed, _ := trim(tt.in)
		if diff := cmp.Diff(tt.want, podOf(trimmed.(*corev1.Pod)), opts); diff != "" {
			t.Errorf("%s: podOf(trim) (-want +got):\n%s", tt.name, diff)
		}
	}
}

func TestTrimPod(t *testing.T) {
	in := pod("x", "a", "10.32.0.2", map[string]string{"pod": "a"}, corev1.ContainerPort{Name: "http", ContainerPort: 80})
	in.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubelet"}}
	in.Spec.Volumes = []corev1.Volume{{Name: "v"}}
	out, _ := trim(in)
	p := out.(*corev1.Pod)
	if len(p.Annotations) != 0 || len(p.ManagedFields) != 0 || len(p.Spec.Volumes) != 0 || len(p.Status.Conditions) != 0 ||
		p.Spec.Containers[0].Image != "" || len(p.Spec.Containers[0].Env) != 0 {
		t.Errorf("trim kept what policy does not read: %+v", p)
	}
	// A kubelet status update of a running pod wakes nobody.
	upd := in.DeepCopy()
	upd.Status.Conditions[0].Status = corev1.ConditionFalse
	upd.ResourceVersion = "2"
	o, _ := trim(in)
	n, _ := trim(upd)
	if !samePod(o, n) {
		t.Errorf("samePod after a condition change = false; want true")
	}
	upd.Labels = map[string]string{"pod": "b"}
	n, _ = trim(upd)
	if samePod(o, n) {
		t.Errorf("samePod after a label change = true; want false")
	}

	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "deny",
		Annotations: map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{...}"}}}
	tp, _ := trim(np)
	if got := tp.(*networkingv1.NetworkPolicy); len(got.Annotations) != 0 || got.Name != "deny" {
		t.Errorf("trim(networkpolicy) = %+v; want no annotations", got)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "x", Labels: map[string]string{"ns": "x"},
		Annotations: map[string]string{"a": "b"}}, Spec: corev1.NamespaceSpec{Finalizers: []corev1.FinalizerName{"kubernetes"}}}
	tn, _ := trim(ns)
	if got := tn.(*corev1.Namespace); len(got.Annotations) != 0 || len(got.Spec.Finalizers) != 0 || got.Labels["ns"] != "x" {
		t.Errorf("trim(namespace) = %+v; want name and labels", got)
	}
}

func namespace(name string, lbls map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("ns-" + name), Labels: lbls}}
}

func denyAll(ns, name string) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("np-" + ns + "-" + name), ResourceVersion: "1"}}
}

// viewOf summarises a view as "ns/pod ip" and "ns/policy" lines.
func viewOf(v PolicyView) []string {
	var out []string
	for _, ns := range v.Namespaces {
		out = append(out, fmt.Sprintf("namespace %s %v", ns.Name, ns.Labels))
	}
	for _, p := range v.Pods {
		ip := "-"
		if p.IP.IsValid() {
			ip = p.IP.String()
		}
		out = append(out, fmt.Sprintf("pod %s/%s %s %v", p.Namespace, p.Name, ip, p.Labels))
	}
	for _, np := range v.Policies {
		out = append(out, fmt.Sprintf("policy %s ingress=%v egress=%v", np, np.IsolateIngress, np.IsolateEgress))
	}
	for _, e := range v.Refused {
		out = append(out, "refused "+e.Error())
	}
	return out
}

func TestPolicyInformers(t *testing.T) {
	objs := []runtime.Object{node("n1", []string{"192.168.79.11"}),
		namespace("x", map[string]string{"ns": "x"}),
		pod("x", "a", "10.32.0.2", map[string]string{"pod": "a"}),
		denyAll("x", "deny-all")}
	c, cs := newFake(t, objs...)
	c.cfg.Policy = true
	if _, synced := c.PolicyView(); synced {
		t.Fatalf("PolicyView before Run: synced")
	}
	startClient(t, c)
	ctx := t.Context()
	want := func(lines ...string) func() error {
		return func() error {
			v, synced := c.PolicyView()
			if !synced {
				return errors.New("not synced")
			}
			if diff := cmp.Diff(lines, viewOf(v)); diff != "" {
				return fmt.Errorf("view (-want +got):\n%s", diff)
			}
			return nil
		}
	}
	testutil.Eventually(t, 10*time.Second, "synced view", want(
		"namespace x map[ns:x]", "pod x/a 10.32.0.2 map[pod:a]", "policy x/deny-all ingress=true egress=false"))
	v0, _ := c.PolicyView()
	waitPolicyChanged(t, c, "sync")

	// A status update that policy does not see changes nothing.
	a, _ := cs.CoreV1().Pods("x").Get(ctx, "a", metav1.GetOptions{})
	a.Status.Conditions[0].Status = corev1.ConditionFalse
	if _, err := cs.CoreV1().Pods("x").UpdateStatus(ctx, a, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	b := pod("x", "b", "", map[string]string{"pod": "b"})
	if _, err := cs.CoreV1().Pods("x").Create(ctx, b, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPolicyChanged(t, c, "create x/b")
	testutil.Eventually(t, 10*time.Second, "x/b listed", want(
		"namespace x map[ns:x]", "pod x/a 10.32.0.2 map[pod:a]", "pod x/b - map[pod:b]", "policy x/deny-all ingress=true egress=false"))
	if v1, _ := c.PolicyView(); v1.Version != v0.Version+1 {
		t.Errorf("version after a status update and a create = %d; want %d (the status update is no change)", v1.Version, v0.Version+1)
	}

	// A policy update is converted again; a namespace's labels count.
	np := denyAll("x", "deny-all")
	np.ResourceVersion = "2"
	np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	if _, err := cs.NetworkingV1().NetworkPolicies("x").Update(ctx, np, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Namespaces().Update(ctx, namespace("x", map[string]string{"ns": "x", "team": "t"}), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	bad := denyAll("x", "bad-selector")
	bad.Spec.PodSelector = metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "pod", Operator: "Near"}}}
	udp := corev1.ProtocolUDP
	port := intstr.FromInt32(80)
	bad2 := denyAll("x", "sctp")
	sctp := corev1.ProtocolSCTP
	bad2.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Protocol: &sctp, Port: &port}, {Protocol: &udp, Port: &port}}}}
	for _, p := range []*networkingv1.NetworkPolicy{bad, bad2} {
		if _, err := cs.NetworkingV1().NetworkPolicies("x").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 10*time.Second, "updated policy and namespace", want(
		"namespace x map[ns:x team:t]", "pod x/a 10.32.0.2 map[pod:a]", "pod x/b - map[pod:b]",
		"policy x/deny-all ingress=false egress=true", "policy x/sctp ingress=true egress=false",
		`refused networkpolicy x/bad-selector: podSelector: invalid: "Near" is not a valid label selector operator`))
	v, _ := c.PolicyView()
	if probs := v.Policies[1].Problems; len(probs) != 1 || !errors.Is(probs[0], policy.ErrUnsupported) {
		t.Errorf("x/sctp problems %v; want one ErrUnsupported (SCTP)", probs)
	}

	if err := cs.NetworkingV1().NetworkPolicies("x").Delete(ctx, "deny-all", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cs.CoreV1().Pods("x").Delete(ctx, "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "deleted policy and pod", want(
		"namespace x map[ns:x team:t]", "pod x/b - map[pod:b]", "policy x/sctp ingress=true egress=false",
		`refused networkpolicy x/bad-selector: podSelector: invalid: "Near" is not a valid label selector operator`))
	c.policy.mu.Lock()
	cached := len(c.policy.converted)
	c.policy.mu.Unlock()
	if cached != 2 {
		t.Errorf("%d conversions cached; want 2 (the deleted policy's dropped)", cached)
	}
}

// TestPolicyOff: without Config.Policy, no policy informer runs.
func TestPolicyOff(t *testing.T) {
	c, _ := newFake(t, node("n1", []string{"192.168.79.11"}), denyAll("x", "deny-all"))
	startClient(t, c)
	testutil.Eventually(t, 10*time.Second, "nodes synced", wantNames(c, "n1"))
	if _, synced := c.PolicyView(); synced {
		t.Errorf("PolicyView synced without Config.Policy")
	}
	select {
	case <-c.PolicyChanged():
		t.Errorf("PolicyChanged fired without Config.Policy")
	default:
	}
}

func waitPolicyChanged(t *testing.T, c *Client, what string) {
	t.Helper()
	select {
	case <-c.PolicyChanged():
	case <-time.After(10 * time.Second):
		t.Fatalf("no policy change signal after %s", what)
	}
}
