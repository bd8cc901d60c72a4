package kubebed

// Measurements for the README benchmark (weft against the reference bridge
// plugin on the same harness): pod create-to-Running latency, and memory
// and CPU of the cluster's daemons and of one pod.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/weftmesh/weft/internal/testutil"
)

// PodStartLatencies creates n pods of image (its default command,
// imagePullPolicy Never) in namespace default at once, placed by the
// scheduler, and returns for each, in creation order, the time from just
// before its Create call to the first moment a watch saw it Running (all
// its containers started: scheduling, sandbox, CNI ADD, container start
// and the status report all count). The pods are deleted afterwards and
// gone when it returns.
func (c *Cluster) PodStartLatencies(n int, image string) ([]time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pods := c.client.CoreV1().Pods("default")
	run := c.Prefix + "-" + strconv.FormatInt(time.Now().UnixNano()%1e6, 36)
	sel := "kubebed-bench=" + run
	list, err := pods.List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return nil, err
	}
	rv := list.ResourceVersion // of the last event seen: a closed watch resumes there
	w, err := pods.Watch(ctx, metav1.ListOptions{LabelSelector: sel, ResourceVersion: rv})
	if err != nil {
		return nil, err
	}
	defer func() { w.Stop() }()
	defer c.deletePods(sel)

	var mu sync.Mutex // guards created
	created := map[string]time.Time{}
	names := make([]string, n)
	errc := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		names[i] = fmt.Sprintf("%s-%d", run, i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := benchPod(names[i], image, run)
			mu.Lock()
			created[names[i]] = time.Now()
			mu.Unlock()
			if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
				errc <- fmt.Errorf("create %s: %w", names[i], err)
			}
		}()
	}
	running := map[string]time.Time{}
	for len(running) < n {
		select {
		case err := <-errc:
			return nil, err
		case <-ctx.Done():
			return nil, fmt.Errorf("%d of %d pods Running after 5 min", len(running), n)
		case ev, ok := <-w.ResultChan():
			if !ok {
				// The API server ends watches (its timeout, or under
				// load): resume from the last event, which replays what
				// happened in between.
				if w, err = pods.Watch(ctx, metav1.ListOptions{LabelSelector: sel, ResourceVersion: rv}); err != nil {
					return nil, fmt.Errorf("pod watch closed, and again: %w", err)
				}
				continue
			}
			if ev.Type == watch.Error {
				return nil, fmt.Errorf("pod watch: %v", ev.Object)
			}
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			rv = p.ResourceVersion
			if p.Status.Phase != corev1.PodRunning {
				continue
			}
			if _, seen := running[p.Name]; !seen {
				running[p.Name] = time.Now()
			}
		}
	}
	wg.Wait()
	out := make([]time.Duration, n)
	for i, name := range names {
		out[i] = running[name].Sub(created[name])
	}
	return out, nil
}

func benchPod(name, image, run string) *corev1.Pod {
	no, grace := false, int64(1)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubebed-bench": run}},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken:  &no,
			EnableServiceLinks:            &no,
			TerminationGracePeriodSeconds: &grace,
			Containers:                    []corev1.Container{{Name: "c", Image: image, ImagePullPolicy: corev1.PullNever}},
		},
	}
}

// deletePods deletes the pods of selector in default and waits (up to 2
// min) until they are gone. Not forced: a pod object goes only once its
// kubelet has stopped its containers, so the next measurement does not
// overlap with this one's cleanup.
func (c *Cluster) deletePods(selector string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pods := c.client.CoreV1().Pods("default")
	_ = pods.DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: selector})
	_ = c.poll(ctx, "benchmark pods gone", func() error {
		l, err := pods.List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return err
		}
		if len(l.Items) > 0 {
			return fmt.Errorf("%d left", len(l.Items))
		}
		return nil
	})
}

// RSS returns the resident memory in bytes of each running daemon (by
// name: etcd, kube-apiserver, kubelet-n1, containerd-n1, ...), of each
// node's pods ("pods-n1": every process in the node's cgroup tree) and of
// each node's containerd shims ("shims-n1").
func (c *Cluster) RSS() map[string]uint64 {
	out := map[string]uint64{}
	c.mu.Lock()
	for _, d := range c.daemons {
		if d.running() {
			out[d.name] += vmRSS(d.cmd.Process.Pid)
		}
	}
	c.mu.Unlock()
	for _, n := range c.Nodes {
		for _, pid := range cgroupProcs(n.CgroupRoot) {
			out["pods-"+n.Name] += vmRSS(pid)
		}
		for _, pid := range testutil.PidsWithArg(n.ContainerdSock) {
			out["shims-"+n.Name] += vmRSS(pid)
		}
	}
	return out
}

// vmRSS returns the VmRSS of pid in bytes (0 if it is gone).
func vmRSS(pid int) uint64 {
	kb, err := testutil.StatusKiB(pid, "VmRSS")
	if err != nil {
		return 0
	}
	return uint64(kb) * 1024
}

// PodUsage returns the resident memory (bytes, the sum of its processes'
// VmRSS) and the CPU time used so far (cpuacct.usage of its cgroup) of pod
// ns/name. Two calls some time apart give its CPU rate.
func (c *Cluster) PodUsage(ns, name string) (rss uint64, cpu time.Duration, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := c.client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return 0, 0, err
	}
	n, err := c.node(p.Spec.NodeName)
	if err != nil {
		return 0, 0, err
	}
	podDir := "pod" + string(p.UID)
	var dirs []string // the pod's cgroup in every hierarchy
	hier, _ := cgroupHierarchies()
	for _, h := range hier {
		_ = filepath.WalkDir(filepath.Join(h, n.CgroupRoot), func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() && d.Name() == podDir {
				dirs = append(dirs, path)
				return filepath.SkipDir
			}
			return nil
		})
	}
	if len(dirs) == 0 {
		return 0, 0, fmt.Errorf("pod %s/%s: no cgroup %s under %s", ns, name, podDir, n.CgroupRoot)
	}
	seen := map[int]bool{}
	for _, d := range dirs { // every hierarchy lists the same processes: seen counts each once
		if strings.HasPrefix(d, "/sys/fs/cgroup/cpuacct/") {
			if b, err := os.ReadFile(filepath.Join(d, "cpuacct.usage")); err == nil {
				ns, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
				cpu = time.Duration(ns)
			}
		}
		_ = filepath.WalkDir(d, func(path string, e os.DirEntry, err error) error {
			if err != nil || e.IsDir() || e.Name() != "cgroup.procs" {
				return nil
			}
			b, _ := os.ReadFile(path)
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && !seen[pid] {
					seen[pid] = true
					rss += vmRSS(pid)
				}
			}
			return nil
		})
	}
	return rss, cpu, nil
}
