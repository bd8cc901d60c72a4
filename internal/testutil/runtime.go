package testutil

// Container runtime pieces shared by the two beds that run a real
// containerd (test/testbed's CNI runtime test and test/kubebed's nodes):
// its configuration, finding the shims it leaves behind, and removing a
// cgroup tree.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ContainerdPaths are where one containerd keeps its things.
type ContainerdPaths struct {
	Dir          string // root/, state/, opt/ and runc/ go below it
	Socket       string // its gRPC socket (the ttrpc one is SOCKET.ttrpc)
	SandboxImage string // the pause image, imported beforehand
	CNIBinDir    string
	CNIConfDir   string
	Runc         string // the runc binary; "" = runc on containerd's PATH
}

// ContainerdConfig is a containerd 1.6 configuration for a test runtime on
// this machine: everything under p.Dir and its own socket, the CRI plugin
// with CNI, cgroupfs, and the settings a root without CAP_SYS_RESOURCE
// needs.
func ContainerdConfig(p ContainerdPaths) string {
	runc := ""
	if p.Runc != "" {
		runc = fmt.Sprintf("\n          BinaryName = %q", p.Runc)
	}
	return fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
oom_score = 0
[grpc]
  address = %[3]q
[ttrpc]
  address = "%[3]s.ttrpc"
[metrics]
  address = ""
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = %[4]q
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = %[5]q
    netns_mounts_under_state_dir = true
    disable_apparmor = true
    enable_selinux = false
    # root here lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj
    restrict_oom_score_adj = true
    # the kubelet proxies exec, attach and port-forward streams to it
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          Root = %[6]q
          SystemdCgroup = false%[9]s
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = %[7]q
      conf_dir = %[8]q
      max_conf_num = 1
`, filepath.Join(p.Dir, "root"), filepath.Join(p.Dir, "state"), p.Socket, filepath.Join(p.Dir, "opt"),
		p.SandboxImage, filepath.Join(p.Dir, "runc"), p.CNIBinDir, p.CNIConfDir, runc)
}

// PidsWithArg returns the processes that have arg as one whole argument
// on their command line (a containerd's shims name its socket: they
// outlive it).
func PidsWithArg(arg string) []int {
	var pids []int
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range procs {
		b, err := os.ReadFile(f)
		if err != nil || !strings.Contains(string(b), "\x00"+arg+"\x00") {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(f))); err == nil && pid > 1 {
			pids = append(pids, pid)
		}
	}
	return pids
}

// RemoveCgroupTree removes the cgroup directory dir and its children,
// deepest first, retrying for a while as killed processes leave it.
func RemoveCgroupTree(dir string) error {
	return Poll(10*time.Second, func() error {
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
