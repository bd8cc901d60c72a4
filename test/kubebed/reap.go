package kubebed

// The reaper: what a run made is written down (the state file
// /run/weft-kubebed.state: namespaces and their inodes, cgroup roots, the
// scratch directory, the shielded sysctls' values), and reap removes all of
// it: SIGKILL to every process in one of the cluster's network or mount
// namespaces (matched by namespace inode) or cgroup trees, until none is
// left; unmount everything under the scratch directory (the node
// mount-namespace files, so the namespaces and every mount in them go);
// delete the network namespaces; remove the cgroup trees (/PREFIX-nN in
// every hierarchy, unified included); put back any shielded sysctl that
// changed after all; remove the scratch directory and the state file. It is
// the last step of every teardown, and if a test process dies without its
// cleanups, the next Start (holding the machine lock, so that run is surely
// dead) reaps what its state file names.

import (
	"bufio"
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
	"time"

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
			if err := testutil.RemoveCgroupTree(filepath.Join(h, cg)); err != nil {
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
