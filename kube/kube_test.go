package kube

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/kube/kubefake"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var created = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

// node builds a Node object: addrs are InternalIPs, conds "Type=Status"
// or "Type=Status/Reason".
func node(name string, addrs []string, conds ...string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(created)}}
	n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeHostName, Address: name})
	for _, a := range addrs {
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a})
	}
	for _, c := range conds {
		typ, rest, _ := strings.Cut(c, "=")
		st, reason, _ := strings.Cut(rest, "/")
		n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{Type: corev1.NodeConditionType(typ),
			Status: corev1.ConditionStatus(st), Reason: reason, LastHeartbeatTime: metav1.NewTime(created)})
	}
	n.Status.Images = []corev1.ContainerImage{{Names: []string{"registry.example/big:1"}, SizeBytes: 1 << 30}}
	return n
}

func newFake(t *testing.T, objs ...runtime.Object) (*Client, *fake.Clientset) {
	t.Helper()
	cs := fake.NewClientset(objs...)
	cfg := DefaultConfig()
	cfg.API = kubefake.New(cs)
	cfg.RetryMin, cfg.RetryMax = time.Millisecond, 5*time.Millisecond
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c, cs
}

// startClient runs c until the test ends, and fails the test if Run
// returns an error.
func startClient(t *testing.T, c *Client) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func TestNodeOf(t *testing.T) {
	tests := []struct {
		name string
		in   *corev1.Node
		want Node
	}{
		{"ready, one address", node("n1", []string{"192.168.79.11"}, "Ready=True"),
			Node{Name: "n1", InternalIP: netip.MustParseAddr("192.168.79.11"), Ready: true, Created: created}},
		{"IPv4 preferred over an earlier IPv6", node("n2", []string{"fd00::12", "192.168.79.12"}, "Ready=False"),
			Node{Name: "n2", InternalIP: netip.MustParseAddr("192.168.79.12"), Created: created}},
		{"IPv6 only", node("n3", []string{"fd00::13"}),
			Node{Name: "n3", InternalIP: netip.MustParseAddr("fd00::13"), Created: created}},
		{"no address yet", node("n4", nil, "Ready=Unknown"), Node{Name: "n4", Created: created}},
		{"bad address skipped", node("n5", []string{"not-an-ip", "10.0.0.5"}),
			Node{Name: "n5", InternalIP: netip.MustParseAddr("10.0.0.5"), Created: created}},
		{"network set by weft", node("n6", nil, "NetworkUnavailable=False/WeftIsUp"),
			Node{Name: "n6", NetworkAvailable: true, Created: created}},
		{"network set by another plugin", node("n7", nil, "NetworkUnavailable=False/CalicoIsUp"),
			Node{Name: "n7", Created: created}},
		{"network unavailable", node("n8", nil, "NetworkUnavailable=True/NoRouteCreated"),
			Node{Name: "n8", Created: created}},
	}
	for _, tt := range tests {
		if got := nodeOf(tt.in); got != tt.want {
			t.Errorf("%s: nodeOf = %+v; want %+v", tt.name, got, tt.want)
		}
		trimmed, _ := trim(tt.in)
		if got := nodeOf(trimmed.(*corev1.Node)); got != tt.want {
			t.Errorf("%s: nodeOf(trimNode) = %+v; want %+v", tt.name, got, tt.want)
		}
	}
}

func TestTrimNode(t *testing.T) {
	in := node("n1", []string{"192.168.79.11"}, "Ready=True", "MemoryPressure=False", "NetworkUnavailable=False/WeftIsUp")
	in.Spec.PodCIDR = "10.244.1.0/24"
	in.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubelet"}}
	out, err := trim(in)
	if err != nil {
		t.Fatalf("trimNode: %v", err)
	}
	n := out.(*corev1.Node)
	if len(n.Status.Images) != 0 || len(n.ManagedFields) != 0 || n.Spec.PodCIDR != "" {
		t.Errorf("trimNode kept images, managed fields or spec: %+v", n)
	}
	if len(n.Status.Addresses) != 1 || len(n.Status.Conditions) != 2 {
		t.Errorf("trimNode kept addresses %v and conditions %v; want the InternalIP and Ready, NetworkUnavailable", n.Status.Addresses, n.Status.Conditions)
	}
	if !n.Status.Conditions[0].LastHeartbeatTime.IsZero() {
		t.Errorf("trimNode kept a heartbeat time: a kubelet status update would wake the daemon")
	}
	other := &corev1.Service{}
	if got, _ := trim(other); got != other {
		t.Errorf("trim changed an object of another kind")
	}
}

func TestListNodes(t *testing.T) {
	c, _ := newFake(t, node("n2", []string{"192.168.79.12"}), node("n1", []string{"192.168.79.11"}, "Ready=True"))
	got, err := c.ListNodes(context.Background())
	if err != nil {
		t.Fatalf("ListNodes: %v", err)
	}
	want := []Node{
		{Name: "n1", InternalIP: netip.MustParseAddr("192.168.79.11"), Ready: true, Created: created},
		{Name: "n2", InternalIP: netip.MustParseAddr("192.168.79.12"), Created: created},
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
		t.Errorf("ListNodes (-want +got):\n%s", diff)
	}
}

// names returns the informer's node names, or an error until it synced.
func names(c *Client) ([]string, error) {
	ns, synced := c.Nodes()
	if !synced {
		return nil, errors.New("informer not synced")
	}
	var out []string
	for _, n := range ns {
		out = append(out, n.Name)
	}
	return out, nil
}

func wantNames(c *Client, want ...string) func() error {
	return func() error {
		got, err := names(c)
		if err != nil {
			return err
		}
		if !cmp.Equal(got, want) {
			return fmt.Errorf("nodes %v; want %v", got, want)
		}
		return nil
	}
}

func waitChanged(t *testing.T, c *Client, what string) {
	t.Helper()
	select {
	case <-c.Changed():
	case <-time.After(10 * time.Second):
		t.Fatalf("no change signal after %s", what)
	}
}

func TestNodeInformer(t *testing.T) {
	c, cs := newFake(t, node("n1", []string{"192.168.79.11"}, "Ready=True"), node("n2", []string{"192.168.79.12"}, "Ready=True"))
	if ns, synced := c.Nodes(); synced || ns != nil {
		t.Fatalf("Nodes before Run = %v, %v; want nil, false", ns, synced)
	}
	startClient(t, c)
	ctx := t.Context()
	testutil.Eventually(t, 10*time.Second, "informer synced with n1, n2", wantNames(c, "n1", "n2"))
	waitChanged(t, c, "sync")

	nodes := cs.CoreV1().Nodes()
	if _, err := nodes.Create(ctx, node("n3", []string{"192.168.79.13"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitChanged(t, c, "create n3")
	testutil.Eventually(t, 10*time.Second, "n3 listed", wantNames(c, "n1", "n2", "n3"))

	// A change of a field weft reads wakes the daemon.
	n3 := node("n3", []string{"192.168.79.13"}, "Ready=True")
	if _, err := nodes.UpdateStatus(ctx, n3, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitChanged(t, c, "n3 turned Ready")
	testutil.Eventually(t, 10*time.Second, "n3 ready", func() error {
		ns, _ := c.Nodes()
		if len(ns) != 3 || !ns[2].Ready {
			return fmt.Errorf("nodes %+v; want n3 ready", ns)
		}
		return nil
	})

	if err := nodes.Delete(ctx, "n1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitChanged(t, c, "delete n1")
	testutil.Eventually(t, 10*time.Second, "n1 gone", wantNames(c, "n2", "n3"))

	if err := c.Run(ctx); err == nil {
		t.Errorf("second Run = nil; want an error")
	}
}

func condition(t *testing.T, cs *fake.Clientset, name string, typ corev1.NodeConditionType) []corev1.NodeCondition {
	t.Helper()
	n, err := cs.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get node %s: %v", name, err)
	}
	var out []corev1.NodeCondition
	for _, c := range n.Status.Conditions {
		if c.Type == typ {
			out = append(out, c)
		}
	}
	return out
}

func TestSetNetworkAvailable(t *testing.T) {
	c, cs := newFake(t, node("n1", []string{"192.168.79.11"}, "Ready=True", "NetworkUnavailable=True/NoRouteCreated"))
	ctx := context.Background()
	for i := range 2 { // idempotent
		if err := c.SetNetworkAvailable(ctx, "n1"); err != nil {
			t.Fatalf("SetNetworkAvailable #%d: %v", i+1, err)
		}
		got := condition(t, cs, "n1", corev1.NodeNetworkUnavailable)
		if len(got) != 1 || got[0].Status != corev1.ConditionFalse || got[0].Reason != NetworkReason || got[0].Message != NetworkMessage {
			t.Errorf("after SetNetworkAvailable #%d: NetworkUnavailable conditions %+v; want one, False, %s", i+1, got, NetworkReason)
		}
		if ready := condition(t, cs, "n1", corev1.NodeReady); len(ready) != 1 || ready[0].Status != corev1.ConditionTrue {
			t.Errorf("after SetNetworkAvailable #%d: Ready conditions %+v; want the kubelet's untouched", i+1, ready)
		}
	}
	var patches []string
	for _, a := range cs.Actions() {
		if p, ok := a.(k8stesting.PatchAction); ok {
			patches = append(patches, fmt.Sprintf("%s %s/%s %s", a.GetVerb(), a.GetResource().Resource, a.GetSubresource(), p.GetPatchType()))
		}
	}
	want := []string{"patch nodes/status application/strategic-merge-patch+json", "patch nodes/status application/strategic-merge-patch+json"}
	if !cmp.Equal(patches, want) {
		t.Errorf("API actions %q; want %q", patches, want)
	}
}

func TestSetNetworkAvailableRetries(t *testing.T) {
	c, cs := newFake(t, node("n1", nil))
	var calls atomic.Int32
	cs.PrependReactor("patch", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		if calls.Add(1) <= 2 {
			return true, nil, apierrors.NewServiceUnavailable("etcd is slow")
		}
		return false, nil, nil
	})
	if err := c.SetNetworkAvailable(context.Background(), "n1"); err != nil {
		t.Fatalf("SetNetworkAvailable: %v", err)
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("patch attempts = %d; want 3 (two failures, then success)", n)
	}
	if got := condition(t, cs, "n1", corev1.NodeNetworkUnavailable); len(got) != 1 || got[0].Status != corev1.ConditionFalse {
		t.Errorf("NetworkUnavailable conditions %+v; want False", got)
	}
}

func TestSetNetworkAvailableErrors(t *testing.T) {
	c, cs := newFake(t, node("n1", nil))
	if err := c.SetNetworkAvailable(context.Background(), "gone"); !errors.Is(err, ErrNoNode) {
		t.Errorf("SetNetworkAvailable(gone) = %v; want ErrNoNode", err)
	}
	cs.PrependReactor("patch", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "nodes"}, "n1", errors.New("RBAC"))
	})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := c.SetNetworkAvailable(ctx, "n1")
	if err == nil || !strings.Contains(err.Error(), "forbidden") || !strings.Contains(err.Error(), "nodes/status") {
		t.Errorf("SetNetworkAvailable without RBAC = %v; want the forbidden error naming nodes/status", err)
	}
}

func TestConfig(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Kubeconfig = filepath.Join(t.TempDir(), "missing")
	if _, err := New(cfg); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("New with a missing kubeconfig = %v; want ErrNotExist", err)
	}
	cfg = DefaultConfig()
	cfg.RetryMin = 0
	if err := cfg.Validate(); !errors.Is(err, ErrBadConfig) {
		t.Errorf("Validate with RetryMin 0 = %v; want ErrBadConfig", err)
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	if _, err := New(DefaultConfig()); !errors.Is(err, ErrNotInCluster) {
		t.Errorf("New in-cluster outside a pod = %v; want ErrNotInCluster", err)
	}
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://192.168.79.10:6443", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t0ken}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600)
	cfg = DefaultConfig()
	cfg.Kubeconfig = kc
	if _, err := New(cfg); err != nil {
		t.Errorf("New with a kubeconfig: %v", err)
	}
}
