package kubebed

// Teardown, in the order that keeps each step working (KUBERNETES.md §7):
//  1. kubelets (so nothing restarts pods), then kube-proxies;
//  2. per node, in parallel: every running pod sandbox stopped through the
//     CRI while CNI still works (pods on the pod network first, then
//     hostNetwork ones: a CNI plugin's own DaemonSet pod must serve the DEL
//     of the others), containerd, the shims it leaves (matched by its
//     socket), then whatever still runs in the node (the reaper below);
//  3. kube-controller-manager and kube-scheduler, kube-apiserver, etcd;
//  4. the reaper: SIGKILL to every process in one of the cluster's network
//     or mount namespaces (by namespace inode) or cgroup trees, until none
//     is left; unmount everything under the scratch directory (the node
//     mount-namespace files, so the namespaces and every mount in them go);
//     delete the network namespaces; remove the cgroup trees (/PREFIX-nN in
//     every hierarchy, unified included); put back any shielded sysctl that
//     changed after all; remove the scratch directory and the state file.
//
// The state file (/run/weft-kubebed.state) names what the run made:
// namespaces and their inodes, cgroup roots, the scratch directory, the
// sysctls' values. If a test process dies without its cleanups, the next
// Start (holding the machine lock, so the run is surely dead) runs the
// reaper from it.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/weftmesh/weft/internal/testutil"
)

const stateFile = "/run/weft-kubebed.state"

// runState is what one run made, for its reaper; mu guards following.
type runState struct {
	mu          sync.Mutex
	Prefix      string
	Dir         string
	NetNS       []string          // names
	NetNSInodes []uint64          // their inodes (they outlive the files while a process is inside)
	MountNS     []uint64          // node mount namespace inodes
	Cgroups     []string          // cgroup roots, e.g. /kb3f2a-n1
	Sysctls     map[string]string // shielded key -> value before the run
}

func newRunState(c *Cluster) *runState {
	s := &runState{Prefix: c.Prefix, Dir: c.Dir, Sysctls: map[string]string{}}
	s.NetNS = append(s.NetNS, c.Switch, c.ControlPlane.NetNS, c.Plain.NetNS)
	for _, n := range c.Nodes {
		s.NetNS = append(s.NetNS, n.NetNS)
		s.Cgroups = append(s.Cgroups, n.CgroupRoot)
	}
	for _, k := range shieldedSysctls {
		if v, err := os.ReadFile("/proc/sys/" + k); err == nil {
			s.Sysctls[k] = strings.TrimSpace(string(v))
		}
	}
	return s
}

func (s *runState) save() error {
	s.mu.Lock()
	b, err := json.MarshalIndent(s, "", "  ")
	s.mu.Unlock()
	if err != nil {
		return err
	}
	tmp := stateFile + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("kubebed: state: %w", err)
	}
	return os.Rename(tmp, stateFile)
}

func (s *runState) addMountNS(ino uint64) {
	s.mu.Lock()
	s.MountNS = append(s.MountNS, ino)
	s.mu.Unlock()
	_ = s.save()
}

// recordNetNSInodes stores the inodes of the network namespaces.
func (s *runState) recordNetNSInodes() {
	s.mu.Lock()
	for _, name := range s.NetNS {
		if ino, err := nsInode(testutil.NetNSPath(name)); err == nil {
			s.NetNSInodes = append(s.NetNSInodes, ino)
		}
	}
	s.mu.Unlock()
	_ = s.save()
}

// reapStaleRun cleans up after a run whose process died before its
// teardown; the caller holds the machine lock.
func reapStaleRun(logf func(string, ...any)) error {
	b, err := os.ReadFile(stateFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var s runState
	if err := json.Unmarshal(b, &s); err != nil || s.Prefix == "" {
		logf("kubebed: ignoring unreadable %s: %v", stateFile, err)
		return os.Remove(stateFile)
	}
	logf("kubebed: reaping what run %s left (its test process died before its teardown)", s.Prefix)
	if errs := reap(&s, logf); len(errs) > 0 {
		return errors.Join(errs...)
	}
	return nil
}

func nsInode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// procNSInode returns the inode of /proc/PID/ns/KIND ("net", "mnt").
func procNSInode(pid, kind string) uint64 {
	l, err := os.Readlink(filepath.Join("/proc", pid, "ns", kind))
	if err != nil {
		return 0
	}
	l = strings.TrimSuffix(strings.TrimPrefix(l, kind+":["), "]")
	ino, _ := strconv.ParseUint(l, 10, 64)
	return ino
}

// cgroupProcs returns the processes in cgroup root (a tree) of every
// hierarchy.
func cgroupProcs(root string) []int {
	hier, _ := cgroupHierarchies()
	var pids []int
	for _, h := range hier {
		_ = filepath.WalkDir(filepath.Join(h, root), func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			b, _ := os.ReadFile(p)
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					pids = append(pids, pid)
				}
			}
			return nil
		})
	}
	slices.Sort(pids)
	return slices.Compact(pids)
}

// members returns the processes in any of the namespaces (by inode) or
// cgroup roots, this process excepted.
func members(netIno, mntIno []uint64, cgroups []string) []int {
	var pids []int
	for _, cg := range cgroups {
		pids = append(pids, cgroupProcs(cg)...)
	}
	if len(netIno)+len(mntIno) > 0 {
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == os.Getpid() {
				continue
			}
			if slices.Contains(netIno, procNSInode(e.Name(), "net")) || slices.Contains(mntIno, procNSInode(e.Name(), "mnt")) {
				pids = append(pids, pid)
			}
		}
	}
	slices.Sort(pids)
	pids = slices.Compact(pids)
	return slices.DeleteFunc(pids, func(p int) bool { return p == os.Getpid() || p <= 1 })
}

// killAll SIGKILLs the members until there are none (10 s at most) and
// returns those still there.
func killAll(netIno, mntIno []uint64, cgroups []string) []int {
	var left []int
	_ = testutil.Poll(10*time.Second, func() error {
		left = members(netIno, mntIno, cgroups)
		for _, pid := range left {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if len(left) > 0 {
			return fmt.Errorf("%d processes left", len(left))
		}
		return nil
	})
	return left
}

// mountsUnder lists the mount points at or under dir in this process's
// mount namespace, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// removeCgroupTree removes dir and its children, deepest first, retrying
// while killed processes leave it.
func removeCgroupTree(dir string) error {
	return testutil.Poll(10*time.Second, func() error {
		var dirs []string
		_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		var failed error
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
				failed = fmt.Errorf("rmdir %s: %w", dirs[i], err)
			}
		}
		return failed
	})
}

// reap removes everything s names; it returns what it could not.
func reap(s *runState, logf func(string, ...any)) []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	netIno := slices.Clone(s.NetNSInodes)
	for _, name := range s.NetNS {
		if ino, err := nsInode(testutil.NetNSPath(name)); err == nil && !slices.Contains(netIno, ino) {
			netIno = append(netIno, ino)
		}
	}
	if left := killAll(netIno, s.MountNS, s.Cgroups); len(left) > 0 {
		errs = append(errs, fmt.Errorf("processes that survive SIGKILL: %v", left))
	}
	for _, m := range mountsUnder(s.Dir) {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("umount %s: %w", m, err))
		}
	}
	for _, name := range s.NetNS {
		if err := netns.DeleteNamed(name); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("netns del %s: %w", name, err))
		}
	}
	hier, _ := cgroupHierarchies()
	for _, cg := range s.Cgroups {
		for _, h := range hier {
			if err := removeCgroupTree(filepath.Join(h, cg)); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for k, v := range s.Sysctls {
		now, err := os.ReadFile("/proc/sys/" + k)
		if err != nil || strings.TrimSpace(string(now)) == v {
			continue
		}
		logf("kubebed: sysctl %s changed to %s during the run: restoring %s", strings.ReplaceAll(k, "/", "."), strings.TrimSpace(string(now)), v)
		if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restore sysctl %s: %w", k, err))
		}
	}
	if m := mountsUnder(s.Dir); len(m) > 0 {
		errs = append(errs, fmt.Errorf("%s kept (still mounted: %v)", s.Dir, m))
	} else if s.Dir != "" {
		if err := os.RemoveAll(s.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		if err := os.Remove(stateFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errs
}

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
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range procs {
		b, err := os.ReadFile(f)
		if err != nil || !strings.Contains(string(b), "\x00"+n.ContainerdSock+"\x00") {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(f))); err == nil && pid > 1 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
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
