package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/ipam"
	"github.com/weftmesh/weft/kube"
	"github.com/weftmesh/weft/kube/kubefake"
	"github.com/weftmesh/weft/policy/nft"
)

// TestPolicyProgrammingBench (WEFT_POLICY_BENCH=1, root): 1,000 pods (100
// on this node) and 1,000 policies from informer events to the kernel's
// nftables in a throwaway namespace: the full sync, then one pod's label
// change at a time through the running loop (debounce included), against
// rewriting everything (a pass after the applier forgot the table).
func TestPolicyProgrammingBench(t *testing.T) {
	if os.Getenv("WEFT_POLICY_BENCH") == "" {
		t.Skip("set WEFT_POLICY_BENCH=1")
	}
	testutil.Root(t)
	const pods, policies, local = 1000, 1000, 100
	var objs []runtime.Object
	for i := range 10 {
		objs = append(objs, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ns%d", i), Labels: map[string]string{"team": fmt.Sprint(i % 3)}}})
	}
	var allocs []ipam.Allocation
	for i := range pods {
		p := apiPod(fmt.Sprintf("ns%d", i%10), fmt.Sprintf("p%d", i), fmt.Sprintf("10.%d.%d.%d", 32+i/local, (i%local)/250, 2+(i%local)%250))
		p.Labels = map[string]string{"app": fmt.Sprintf("app%d", i%50), "tier": fmt.Sprint(i % 4)}
		if i >= local {
			p.Spec.NodeName = "n2"
		} else {
			allocs = append(allocs, alloc(fmt.Sprintf("c%d", i), p.Status.PodIP+"/12", p.Name+"."+p.Namespace))
		}
		objs = append(objs, p)
	}
	for i := range policies {
		np := apiPolicy(fmt.Sprintf("np%d", i), "", "", 0)
		np.Namespace, np.UID = fmt.Sprintf("ns%d", i%10), types.UID(fmt.Sprintf("np-%d", i))
		np.Spec.PodSelector = metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app%d", i%50)}}
		np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
			{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": fmt.Sprint(i % 4)}},
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprint(i % 3)}}}}}}
		objs = append(objs, np)
	}
	cs := fake.NewClientset(objs...)
	kc := kube.DefaultConfig()
	kc.API, kc.Policy = kubefake.New(cs), true
	c, err := kube.New(kc)
	if err != nil {
		t.Fatal(err)
	}
	ns := testutil.NetNS(t, testutil.Prefix("pb"))
	conn, err := nft.NewNetlinkConn(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ps := newPolicyState(c, "n1", nft.NewApplier(conn), nil, slog.New(slog.DiscardHandler))
	ps.allocs = func() []ipam.Allocation { return allocs }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Run(ctx)
	testutil.Eventually(t, time.Minute, "informers synced", func() error {
		if _, ok := c.PolicyVersion(); !ok {
			return fmt.Errorf("not synced")
		}
		return nil
	})
	start := time.Now()
	if err := ps.pass(); err != nil {
		t.Fatal(err)
	}
	full := time.Since(start)
	var rewrites []time.Duration
	for range 5 {
		if err := nft.NewApplier(conn).Delete(ps.compile.Table); err != nil {
			t.Fatal(err)
		}
		ps.applier.Forget(ps.compile.Table)
		start := time.Now()
		if err := ps.pass(); err != nil {
			t.Fatal(err)
		}
		rewrites = append(rewrites, time.Since(start))
	}

	done := make(chan struct{})
	go func() { defer close(done); ps.run(ctx) }()
	var changes []time.Duration
	for i := range 100 {
		p, err := cs.CoreV1().Pods(fmt.Sprintf("ns%d", i%10)).Get(ctx, fmt.Sprintf("p%d", i%local), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		p.Labels["app"] = fmt.Sprintf("app%d", (i+7)%50)
		v0, _ := c.PolicyVersion()
		start := time.Now()
		if _, err := cs.CoreV1().Pods(p.Namespace).Update(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		for {
			ps.mu.Lock()
			applied := ps.version > v0
			ps.mu.Unlock()
			if applied {
				break
			}
			time.Sleep(time.Millisecond)
		}
		changes = append(changes, time.Since(start))
	}
	cancel()
	<-done
	slices.Sort(changes)
	slices.Sort(rewrites)
	t.Logf("1,000 pods (100 local), 1,000 policies: full sync %v; one label change, event to applied (%v debounce included): p50 %v, p99 %v; rewriting everything (table deleted, then one pass): median %v",
		full.Round(time.Millisecond), policyDebounce, changes[len(changes)/2].Round(time.Millisecond), changes[len(changes)*99/100].Round(time.Millisecond),
		rewrites[len(rewrites)/2].Round(time.Millisecond))
}
