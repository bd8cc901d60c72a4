package kube_test

import (
	"fmt"
	"math"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/test/kubebed"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestKubernetesBench measures, for README's benchmark section, on the same
// harness and in the same run: pod create-to-Running p50/p99 for 30 pods
// with weft against the reference bridge + host-local plugins, the time
// from `kubectl apply -f deploy/weft.yaml` to every node Ready, and the weft
// pods' memory and CPU at idle. It takes two clusters (a few minutes), so
// it runs only with WEFT_K8S_BENCH=1:
//
//	WEFT_K8S_BENCH=1 go test -run TestKubernetesBench -v ./test/kube/
func TestKubernetesBench(t *testing.T) {
	if os.Getenv("WEFT_K8S_BENCH") == "" {
		t.Skip("set WEFT_K8S_BENCH=1 to run the Kubernetes benchmark")
	}
	testutil.Root(t, "nsenter", "etcd", "containerd", "runc", "nft")
	const pods = 30
	rounds := 2
	var bridge, weft []time.Duration
	b := buildWeft(t)
	manifest := readManifest(t)
	for r := range rounds {
		t.Run(fmt.Sprintf("bridge-%d", r), func(t *testing.T) {
			c := kubebed.Start(t, kubebed.Options{Nodes: 3, CNI: kubebed.CNIBridge})
			if err := c.WaitNodesReady(2 * time.Minute); err != nil {
				t.Fatal(err)
			}
			ds, err := c.PodStartLatencies(pods, kubebed.TestboxImage)
			if err != nil {
				t.Fatal(err)
			}
			bridge = append(bridge, ds...)
			p50, p99 := quantiles(ds)
			t.Logf("bridge + host-local: %d pods, create to Running p50 %v p99 %v", pods, p50, p99)
		})
		t.Run(fmt.Sprintf("weft-%d", r), func(t *testing.T) {
			c := kubebed.Start(t, kubebed.Options{Nodes: 3, CNI: kubebed.CNINone, ClusterCIDR: podRange, Images: []string{b.image}})
			ready := installWeft(t, c, manifest)
			t.Logf("kubectl apply -f deploy/weft.yaml to 3 nodes Ready: %v", ready.Round(time.Millisecond))
			ds, err := c.PodStartLatencies(pods, kubebed.TestboxImage)
			if err != nil {
				t.Fatal(err)
			}
			weft = append(weft, ds...)
			p50, p99 := quantiles(ds)
			t.Logf("weft: %d pods, create to Running p50 %v p99 %v", pods, p50, p99)
			idleUsage(t, c)
		})
	}
	if len(bridge) == 0 || len(weft) == 0 {
		t.Fatal("no measurements")
	}
	b50, b99 := quantiles(bridge)
	w50, w99 := quantiles(weft)
	t.Logf("all rounds, %d pods each: weft p50 %v p99 %v; bridge + host-local p50 %v p99 %v; ratio %.2fx / %.2fx",
		len(weft), w50, w99, b50, b99, float64(w50)/float64(b50), float64(w99)/float64(b99))
}

// idleUsage logs each weft pod's RSS and its CPU over 10 s of idle.
func idleUsage(t *testing.T, c *kubebed.Cluster) {
	t.Helper()
	l, err := c.Client().CoreV1().Pods("kube-system").List(t.Context(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=weft"})
	if err != nil {
		t.Fatal(err)
	}
	type sample struct {
		rss uint64
		cpu time.Duration
	}
	first := map[string]sample{}
	for _, p := range l.Items {
		rss, cpu, err := c.PodUsage(p.Namespace, p.Name)
		if err != nil {
			t.Fatal(err)
		}
		first[p.Name] = sample{rss, cpu}
	}
	const idle = 10 * time.Second
	time.Sleep(idle) // the measurement window, not a wait for a condition
	for _, p := range l.Items {
		rss, cpu, err := c.PodUsage(p.Namespace, p.Name)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("idle %s on %s (%s): RSS %.1f MiB, CPU %.2f %% of a core", p.Name, p.Spec.NodeName, p.Labels["app.kubernetes.io/component"],
			float64(rss)/(1<<20), 100*float64(cpu-first[p.Name].cpu)/float64(idle))
	}
}

// quantiles returns the p50 and p99 of ds (nearest rank).
func quantiles(ds []time.Duration) (p50, p99 time.Duration) {
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(q float64) time.Duration { return s[int(math.Ceil(q*float64(len(s))))-1] }
	return at(0.50), at(0.99)
}
