package kubebed

// Teardown, in phases that keep each step working (KUBERNETES.md §7):
//  1. the test's own processes (SpawnPlain, SpawnNode);
//  2. kubelets (so nothing restarts pods), kube-proxies,
//     kube-controller-manager and kube-scheduler, together;
//  3. per node, in parallel: every running pod sandbox stopped through the
//     CRI while CNI still works (pods on the pod network first, then
//     hostNetwork ones: a CNI plugin's own DaemonSet pod must serve the DEL
//     of the others), containerd, the shims it leaves (matched by its
//     socket), then whatever still runs in the node;
//  4. kube-apiserver, then etcd;
//  5. the reaper (reap.go), which also leaves the machine as it was if a
//     step above failed.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/weftmesh/weft/internal/testutil"
)

// stopNode stops node n: kubelet, kube-proxy, pods through the CRI,
// containerd, its shims, and whatever else runs in the node's cgroup tree,
// mount namespace or network namespace.
func (c *Cluster) stopNode(n *Node) []error {
	n.mu.Lock()
	if n.stopped {
		n.mu.Unlock()
		return nil
	}
	n.stopped = true
	n.mu.Unlock()
	for _, name := range []string{"kubelet-", "kube-proxy-"} {
		if d := c.daemon(name + n.Name); d != nil {
			d.stop(10 * time.Second)
		}
	}
	return c.stopRuntime(n)
}

// stopRuntime removes node n's pods, stops its containerd and kills what is
// left in the node.
func (c *Cluster) stopRuntime(n *Node) []error {
	var errs []error
	if d := c.daemon("containerd-" + n.Name); d != nil && d.running() {
		if err := c.removePods(n); err != nil {
			errs = append(errs, fmt.Errorf("node %s: %w", n.Name, err))
		}
		d.stop(10 * time.Second)
	}
	// Shims outlive containerd; ours name its socket on their command line.
	for _, pid := range testutil.PidsWithArg(n.ContainerdSock) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	var netIno []uint64
	if ino, err := nsInode(n.NetNSPath()); err == nil {
		netIno = append(netIno, ino)
	}
	if left := killAll(netIno, []uint64{n.mntIno}, []string{n.CgroupRoot}); len(left) > 0 {
		errs = append(errs, fmt.Errorf("node %s: processes that survive SIGKILL: %v", n.Name, left))
	}
	return errs
}

// removePods stops every running pod sandbox of node n through its CRI, so
// CNI DEL runs for each: pod-network pods first (in parallel), hostNetwork
// ones (a CNI plugin's own) last. Stopped sandboxes are not removed one by
// one (that took seconds per node): nothing of them runs any more, and
// their mounts go with the node's mount namespace, their files with the
// scratch directory.
func (c *Cluster) removePods(n *Node) error {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := c.crictl(ctx, n, "pods", "-q", "--state", "ready")
	if err != nil {
		return err
	}
	var podNet, hostNet []string
	for _, id := range strings.Fields(out) {
		js, err := c.crictl(ctx, n, "inspectp", "-o", "json", id)
		if err != nil {
			podNet = append(podNet, id)
			continue
		}
		var doc struct {
			Status struct {
				Linux struct {
					Namespaces struct {
						Options struct {
							Network string `json:"network"`
						} `json:"options"`
					} `json:"namespaces"`
				} `json:"linux"`
			} `json:"status"`
		}
		if json.Unmarshal([]byte(js), &doc) == nil && doc.Status.Linux.Namespaces.Options.Network == "NODE" {
			hostNet = append(hostNet, id)
		} else {
			podNet = append(podNet, id)
		}
	}
	var mu sync.Mutex // guards errs
	var errs []error
	for _, ids := range [][]string{podNet, hostNet} {
		var wg sync.WaitGroup
		for _, id := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := c.crictl(ctx, n, "stopp", id); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
	}
	return errors.Join(errs...)
}

// StopNode stops node name as a machine that is switched off would stop:
// its kubelet, kube-proxy, every pod (through the CRI, so CNI DEL runs),
// containerd, and anything left in its cgroup tree or namespaces. The
// namespaces stay (the teardown removes them); the Node object stays in the
// API until deleted.
func (c *Cluster) StopNode(name string) error {
	n, err := c.node(name)
	if err != nil {
		return err
	}
	return errors.Join(c.stopNode(n)...)
}

// Stop tears the cluster down now (it is also the t.Cleanup of Start; the
// second call does nothing) and returns what could not be removed.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return nil
	}
	c.stopped = true
	daemons := slices.Clone(c.daemons)
	c.mu.Unlock()
	var errs []error
	var mu sync.Mutex // guards errs
	var phases []string
	phase := func(name string, fns ...func()) {
		start := time.Now()
		var wg sync.WaitGroup
		for _, fn := range fns {
			wg.Add(1)
			go func() { defer wg.Done(); fn() }()
		}
		wg.Wait()
		phases = append(phases, fmt.Sprintf("%s %v", name, time.Since(start).Round(time.Millisecond)))
	}
	stop := func(d *daemon, grace time.Duration) func() { return func() { d.stop(grace) } }
	var user, agents, runtimes []func()
	for _, d := range daemons {
		switch {
		case d.user: // a test's own processes first: they may use the cluster
			user = append(user, stop(d, 5*time.Second))
		case strings.HasPrefix(d.name, "kubelet-"):
			agents = append(agents, stop(d, 10*time.Second))
		case strings.HasPrefix(d.name, "kube-proxy-"), d.name == "kube-controller-manager", d.name == "kube-scheduler":
			agents = append(agents, stop(d, 5*time.Second))
		}
	}
	for _, n := range c.Nodes {
		runtimes = append(runtimes, func() {
			n.mu.Lock()
			n.stopped = true
			n.mu.Unlock()
			e := c.stopRuntime(n)
			mu.Lock()
			errs = append(errs, e...)
			mu.Unlock()
		})
	}
	phase("test processes", user...)
	// Nothing may restart or reschedule pods while they are removed.
	phase("kubelets, kube-proxies, controllers", agents...)
	phase("pods and runtimes", runtimes...)
	for _, name := range []string{"kube-apiserver", "etcd"} { // their data is thrown away: short grace
		if d := c.daemon(name); d != nil {
			phase(name, stop(d, 5*time.Second))
		}
	}
	for _, d := range daemons {
		d.stop(time.Second) // none should be left
	}
	if c.spawner != nil {
		c.spawner.close()
	}
	if c.state != nil {
		phase("reaper", func() { errs = append(errs, reap(c.state, c.t.Logf)...) })
	}
	c.mu.Lock()
	c.stopPhases = strings.Join(phases, ", ")
	c.mu.Unlock()
	return errors.Join(errs...)
}

// teardown is Start's cleanup: the logs' tails when the test failed, Stop,
// and a check that nothing is left.
func (c *Cluster) teardown(t testing.TB) {
	if t.Failed() {
		c.DumpLogs(t)
	}
	c.mu.Lock()
	stopped := c.stopped
	c.mu.Unlock()
	start := time.Now()
	if err := c.Stop(); err != nil {
		t.Errorf("kubebed: teardown: %v", err)
	}
	if left := c.Leftovers(); len(left) > 0 {
		t.Errorf("kubebed: teardown left:\n  %s", strings.Join(left, "\n  "))
	}
	if !stopped {
		c.mu.Lock()
		phases := c.stopPhases
		c.mu.Unlock()
		t.Logf("kubebed: %s torn down in %v (%s)", c.Prefix, time.Since(start).Round(time.Millisecond), phases)
	}
}

// DumpLogs logs the tail of every daemon's log.
func (c *Cluster) DumpLogs(t testing.TB) {
	c.mu.Lock()
	daemons := slices.Clone(c.daemons)
	c.mu.Unlock()
	for _, d := range daemons {
		t.Logf("==== %s (%s), last lines:\n%s", d.name, d.log, tailFile(d.log, 4000))
	}
}

// Leftovers lists what of the cluster still exists on the machine: network
// namespaces with its prefix, links with its prefix in the machine's
// namespace, mounts under its scratch directory, the directory itself,
// processes in its namespaces or cgroup trees, the cgroup trees, and
// shielded sysctls that differ from their values before Start. Empty after
// a clean teardown.
func (c *Cluster) Leftovers() []string {
	var left []string
	if entries, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), c.Prefix+"-") {
				left = append(left, "netns "+e.Name())
			}
		}
	}
	if links, err := netlink.LinkList(); err == nil {
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, c.Prefix) {
				left = append(left, "link "+l.Attrs().Name)
			}
		}
	}
	for _, m := range mountsUnder(c.Dir) {
		left = append(left, "mount "+m)
	}
	if _, err := os.Stat(c.Dir); err == nil {
		left = append(left, "directory "+c.Dir)
	}
	var mnt, net []uint64
	var cgs []string
	c.state.mu.Lock()
	mnt, net = slices.Clone(c.state.MountNS), slices.Clone(c.state.NetNSInodes)
	cgs = slices.Clone(c.state.Cgroups)
	sysctls := c.state.Sysctls
	c.state.mu.Unlock()
	for _, pid := range members(net, mnt, cgs) {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		left = append(left, fmt.Sprintf("process %d (%s)", pid, strings.TrimSpace(string(comm))))
	}
	hier, _ := cgroupHierarchies()
	for _, cg := range cgs {
		for _, h := range hier {
			if _, err := os.Stat(filepath.Join(h, cg)); err == nil {
				left = append(left, "cgroup "+filepath.Join(h, cg))
			}
		}
	}
	for k, v := range sysctls {
		if now, err := os.ReadFile("/proc/sys/" + k); err == nil && strings.TrimSpace(string(now)) != v {
			left = append(left, fmt.Sprintf("sysctl %s = %s (was %s)", k, strings.TrimSpace(string(now)), v))
		}
	}
	return left
}
