package kube_test

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
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
//
// WEFT_K8S_BENCH_ROUNDS=N runs N interleaved rounds (default 2);
// WEFT_K8S_BENCH_KEEP=DIR keeps each round's logs (every daemon's, and
// every pod's, weft's included) in DIR/<round>; WEFT_K8S_BENCH_DEBUG=1
// runs the weft peers with --log-level=debug (the phases of every CNI
// ADD's Allocate and of every NetworkPolicy pass).
func TestKubernetesBench(t *testing.T) {
	if os.Getenv("WEFT_K8S_BENCH") == "" {
		t.Skip("set WEFT_K8S_BENCH=1 to run the Kubernetes benchmark")
	}
	testutil.Root(t, "nsenter", "etcd", "containerd", "runc", "nft")
	const pods = 30
	rounds := 2
	if v := os.Getenv("WEFT_K8S_BENCH_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("WEFT_K8S_BENCH_ROUNDS=%q: want a positive number", v)
		}
		rounds = n
	}
	var bridge, weft []time.Duration
	b := buildWeft(t)
	manifest := readManifest(t)
	if os.Getenv("WEFT_K8S_BENCH_DEBUG") != "" {
		manifest = strings.Replace(manifest, "- --kubernetes ", "- --log-level=debug\n            - --kubernetes ", 1)
	}
	for r := range rounds {
		t.Run(fmt.Sprintf("bridge-%d", r), func(t *testing.T) {
			c := kubebed.Start(t, kubebed.Options{Nodes: 3, CNI: kubebed.CNIBridge})
			keepLogs(t, c)
			if err := c.WaitNodesReady(2 * time.Minute); err != nil {
				t.Fatal(err)
			}
			settle(t, c)
			cpu0 := clusterCPU(c)
			ds, err := c.PodStartLatencies(pods, kubebed.TestboxImage)
			if err != nil {
				t.Fatal(err)
			}
			logCPU(t, cpu0, clusterCPU(c))
			bridge = append(bridge, ds...)
			p50, p99 := quantiles(ds)
			t.Logf("bridge + host-local: %d pods, create to Running p50 %v p99 %v", pods, p50, p99)
		})
		t.Run(fmt.Sprintf("weft-%d", r), func(t *testing.T) {
			c := kubebed.Start(t, kubebed.Options{Nodes: 3, CNI: kubebed.CNINone, ClusterCIDR: podRange, Images: []string{b.image}})
			keepLogs(t, c)
			ready := installWeft(t, c, manifest)
			t.Logf("kubectl apply -f deploy/weft.yaml to 3 nodes Ready: %v", ready.Round(time.Millisecond))
			settle(t, c)
			cpu0 := clusterCPU(c)
			ds, err := c.PodStartLatencies(pods, kubebed.TestboxImage)
			if err != nil {
				t.Fatal(err)
			}
			logCPU(t, cpu0, clusterCPU(c))
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

// keepLogs copies, when WEFT_K8S_BENCH_KEEP names a directory, the
// cluster's logs (the daemons' and every node's pod logs) into a
// directory named after the test before the cluster is torn down.
func keepLogs(t *testing.T, c *kubebed.Cluster) {
	t.Helper()
	dir := os.Getenv("WEFT_K8S_BENCH_KEEP")
	if dir == "" {
		return
	}
	dst := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_"))
	t.Cleanup(func() { // before the teardown: cleanups run last first
		if err := os.MkdirAll(dst, 0o755); err != nil {
			t.Errorf("keep logs: %v", err)
			return
		}
		srcs := []string{c.LogDir + "/."}
		for _, n := range c.Nodes {
			srcs = append(srcs, filepath.Join(n.Dir, "pod-logs"))
		}
		for i, src := range srcs {
			to := dst
			if i > 0 {
				to = filepath.Join(dst, "pod-logs-"+c.Nodes[i-1].Name)
			}
			if out, err := exec.Command("cp", "-a", src, to).CombinedOutput(); err != nil {
				t.Logf("keep logs: cp %s: %v: %s", src, err, out)
			}
		}
		t.Logf("logs kept in %s", dst)
	})
}

// settle waits (at most 90 s) until the cluster's processes use less
// than settledCores over a 2 s window, so that both CNIs' bursts start on
// a cluster done with its own start (kube-proxy's first full syncs, the
// controllers' first lists, weft's peers joining): without it the bridge
// round, Ready as soon as its kubelets run, measured its burst on top of
// the start while the weft round's install had waited it out.
func settle(t *testing.T, c *kubebed.Cluster) {
	t.Helper()
	const (
		settledCores = 0.4
		window       = 2 * time.Second
	)
	start := time.Now()
	var rate float64
	for time.Since(start) < 90*time.Second {
		before := clusterCPU(c)
		time.Sleep(window) // the measurement window, not a wait for a condition
		var used time.Duration
		for name, d := range clusterCPU(c) {
			if d -= before[name]; d > 0 {
				used += d
			}
		}
		if rate = used.Seconds() / window.Seconds(); rate < settledCores {
			t.Logf("settled after %v (cluster at %.2f cores)", time.Since(start).Round(time.Millisecond), rate)
			return
		}
	}
	t.Logf("not settled after %v (cluster at %.2f cores): measuring anyway", time.Since(start).Round(time.Millisecond), rate)
}

// clusterCPU returns the CPU time (user + system, of each process and of
// its waited-for children) of the processes in the cluster's network
// namespaces (control plane and nodes: the daemons, the shims, the
// hostNetwork pods such as weft's), summed by command name.
func clusterCPU(c *kubebed.Cluster) map[string]time.Duration {
	nets := map[string]bool{}
	for _, p := range append([]string{c.ControlPlane.NetNSPath()}, nodePaths(c)...) {
		if l, err := os.Readlink(p); err == nil {
			nets[l] = true
		} else if fi, err := os.Stat(p); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				nets[fmt.Sprintf("net:[%d]", st.Ino)] = true
			}
		}
	}
	out := map[string]time.Duration{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if l, err := os.Readlink("/proc/" + e.Name() + "/ns/net"); err != nil || !nets[l] {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open {
			continue
		}
		f := strings.Fields(s[end+1:]) // f[0] is field 3 (state); utime is field 14
		if len(f) < 15 {
			continue
		}
		var ticks int64
		for _, i := range []int{11, 12, 13, 14} { // utime stime cutime cstime
			v, _ := strconv.ParseInt(f[i], 10, 64)
			ticks += v
		}
		name := s[open+1 : end]
		if name == "weft" { // the peer and the datapath apart
			if cmd, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil {
				if args := strings.Split(string(cmd), "\x00"); len(args) > 1 {
					name += " " + args[1]
				}
			}
		}
		out[name] += time.Duration(ticks) * 10 * time.Millisecond // USER_HZ 100
	}
	return out
}

func nodePaths(c *kubebed.Cluster) []string {
	var out []string
	for _, n := range c.Nodes {
		out = append(out, n.NetNSPath())
	}
	return out
}

// logCPU logs the CPU each command used between two clusterCPU samples,
// largest first (processes that exited and were not waited for by a
// process in the cluster are not counted).
func logCPU(t *testing.T, before, after map[string]time.Duration) {
	t.Helper()
	type use struct {
		name string
		d    time.Duration
	}
	var us []use
	var total time.Duration
	for name, d := range after {
		if d -= before[name]; d > 0 {
			us = append(us, use{name, d})
			total += d
		}
	}
	slices.SortFunc(us, func(a, b use) int { return int(b.d - a.d) })
	var parts []string
	for _, u := range us {
		parts = append(parts, fmt.Sprintf("%s %.2fs", u.name, u.d.Seconds()))
	}
	t.Logf("CPU during the burst: %.2fs in all: %s", total.Seconds(), strings.Join(parts, ", "))
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
