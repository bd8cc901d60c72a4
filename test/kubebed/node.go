package kubebed

// A node is a network namespace plus a mount namespace of its own, shared
// by its containerd, kubelet and kube-proxy (and so by every container and
// hostPath volume they make). In the mount namespace, overlays with
// per-node upper directories cover /etc, /opt, /var/lib, /var/log and /run:
// everything the node or a DaemonSet writes there (/etc/cni/net.d,
// /opt/cni/bin, /var/lib/kubelet/device-plugins, /var/lib/cni, /run/weft,
// /run/containerd/s ...) stays on that node, and reads fall through to the
// machine (/etc/resolv.conf, /usr/lib/cni, binaries). The global sysctls
// the kubelet writes at start are bind-mounted over by plain files (the
// sysctl shield). containerd's root and state, the kubelet's root dir and
// the node's logs stay in the scratch directory, outside the overlays
// (overlayfs cannot be the upper dir of the container snapshots).
//
// The mount namespace is made by `unshare --mount=FILE --propagation slave`
// and kept by a bind of its nsfs file in DIR/ns, which must be a private
// mount (a namespace file on a shared mount would pin the namespace into
// every copy). Inside, the copies of DIR/ns and /run/netns are unmounted
// first, so that a node's namespace pins neither the other nodes'
// namespaces nor any network namespace of the machine.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weftmesh/weft/internal/testutil"
)

// shieldedSysctls are the global keys the kubelet's setupKernelTunables
// writes (vm.overcommit_memory 1, kernel.panic 10, kernel.panic_on_oops 1,
// and the keyring limits); in a node they are plain files.
var shieldedSysctls = []string{"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes"}

// overlaid are the directories a node sees through its own overlay.
var overlaid = []string{"/etc", "/opt", "/var/lib", "/var/log", "/run"}

const nodeSetup = `
d=$1 nsdir=$2 conflist=$3
shift 3
umount -l "$nsdir"
umount -l /run/netns 2>/dev/null || true
for p in /etc /opt /var/lib /var/log /run; do
  k=$(echo "${p#/}" | tr / -)
  mount -t overlay "kubebed-$k" -o "lowerdir=$p,upperdir=$d/ovl/$k.up,workdir=$d/ovl/$k.work" "$p"
done
for k in "$@"; do mount --bind "$d/sysctl/$(echo "$k" | tr / _)" "/proc/sys/$k"; done
mkdir -p /etc/cni/net.d /opt/cni/bin
for p in /usr/lib/cni/*; do ln -sfn "$p" "/opt/cni/bin/${p##*/}"; done
if [ -n "$conflist" ]; then printf '%s\n' "$conflist" >/etc/cni/net.d/10-kubebed.conflist; fi
`

// makeMountNS creates node n's mount namespace.
func (c *Cluster) makeMountNS(ctx context.Context, n *Node) error {
	nsdir := filepath.Join(c.Dir, "ns")
	for _, k := range overlaid {
		k = strings.ReplaceAll(strings.TrimPrefix(k, "/"), "/", "-")
		for _, s := range []string{".up", ".work"} {
			if err := os.MkdirAll(filepath.Join(n.Dir, "ovl", k+s), 0o755); err != nil {
				return err
			}
		}
	}
	if err := os.MkdirAll(filepath.Join(n.Dir, "sysctl"), 0o755); err != nil {
		return err
	}
	for _, k := range shieldedSysctls {
		v, err := os.ReadFile("/proc/sys/" + k)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(n.Dir, "sysctl", strings.ReplaceAll(k, "/", "_")), v, 0o644); err != nil {
			return err
		}
	}
	if err := os.WriteFile(n.MountNS, nil, 0o600); err != nil {
		return err
	}
	conflist := ""
	if c.opts.CNI == CNIBridge {
		conflist = bridgeConflist(n.PodCIDR)
	}
	argv := append([]string{"unshare", "--mount=" + n.MountNS, "--propagation", "slave", "sh", "-ec", nodeSetup, "sh",
		n.Dir, nsdir, conflist}, shieldedSysctls...)
	if _, err := run(ctx, argv...); err != nil {
		return fmt.Errorf("node %s: mount namespace: %w", n.Name, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(n.MountNS, &st); err != nil {
		return err
	}
	n.mntIno = st.Ino
	c.state.addMountNS(st.Ino)
	return nil
}

// privateNSDir makes DIR/ns a private bind mount of itself (once).
func (c *Cluster) privateNSDir() error {
	nsdir := filepath.Join(c.Dir, "ns")
	if err := os.MkdirAll(nsdir, 0o700); err != nil {
		return err
	}
	if err := unix.Mount(nsdir, nsdir, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s: %w", nsdir, err)
	}
	if err := unix.Mount("", nsdir, "", unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make %s private: %w", nsdir, err)
	}
	return nil
}

// bridgeConflist is the reference plugins' network for a node: a bridge
// with the node's /24, the node as gateway, no masquerade (routes between
// the nodes carry pod traffic), hairpin for Services that lead back to the
// same pod, and portmap for hostPorts.
func bridgeConflist(podCIDR netip.Prefix) string {
	p, gw := podCIDR.Masked().String(), podCIDR.Masked().Addr().Next().String()
	return fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "kubebed", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": %q, "gateway": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}
]}`, p, gw)
}

// makeCgroupRoot creates the kubelet's cgroupRoot in every v1 hierarchy
// (it must exist; the kubelet makes it in the unified one itself), with the
// parent's cpus and mems in cpuset (an empty cpuset refuses tasks).
func makeCgroupRoot(root string) error {
	hier, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	for _, h := range hier {
		if filepath.Base(h) == "unified" {
			continue
		}
		dir := filepath.Join(h, root)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("cgroup %s: %w", dir, err)
		}
		if filepath.Base(h) == "cpuset" {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				v, err := os.ReadFile(filepath.Join(h, f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
					return fmt.Errorf("cgroup %s/%s: %w", dir, f, err)
				}
			}
		}
	}
	return nil
}

// cgroupHierarchies lists the mounted cgroup hierarchies under
// /sys/fs/cgroup (v1 controllers, named ones, unified; or the v2 root).
func cgroupHierarchies() ([]string, error) {
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		return []string{"/sys/fs/cgroup"}, nil
	}
	entries, err := os.ReadDir("/sys/fs/cgroup")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		p := filepath.Join("/sys/fs/cgroup", e.Name())
		if fi, err := os.Lstat(p); err != nil || !fi.IsDir() { // cpu,cpuacct links
			continue
		}
		if err := unix.Statfs(p, &st); err == nil && (st.Type == unix.CGROUP_SUPER_MAGIC || st.Type == unix.CGROUP2_SUPER_MAGIC) {
			out = append(out, p)
		}
	}
	return out, nil
}

// startRuntime makes node n's mount namespace and cgroup root and starts
// its containerd.
func (c *Cluster) startRuntime(ctx context.Context, n *Node) error {
	if err := c.makeMountNS(ctx, n); err != nil {
		return err
	}
	if err := makeCgroupRoot(n.CgroupRoot); err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	cd := filepath.Join(n.Dir, "containerd")
	conf := testutil.ContainerdConfig(testutil.ContainerdPaths{Dir: cd, Socket: n.ContainerdSock, SandboxImage: PauseImage,
		CNIBinDir: "/opt/cni/bin", CNIConfDir: "/etc/cni/net.d", Runc: "/usr/sbin/runc"})
	if err := os.WriteFile(filepath.Join(n.Dir, "containerd.toml"), []byte(conf), 0o644); err != nil {
		return err
	}
	crictl := fmt.Sprintf("runtime-endpoint: unix://%[1]s\nimage-endpoint: unix://%[1]s\ntimeout: 60\n", n.ContainerdSock)
	if err := os.WriteFile(filepath.Join(n.Dir, "crictl.yaml"), []byte(crictl), 0o644); err != nil {
		return err
	}
	d, err := c.spawn("containerd-"+n.Name, n, "containerd", "--config", filepath.Join(n.Dir, "containerd.toml"))
	if err != nil {
		return err
	}
	return c.poll(ctx, "containerd on "+n.Name, func() error {
		if err := exited(d); err != nil {
			return err
		}
		_, err := c.ctr(ctx, n, "version")
		return err
	})
}

// ctr runs containerd's ctr in node n's namespaces against its k8s.io
// namespace (the CRI's).
func (c *Cluster) ctr(ctx context.Context, n *Node, args ...string) (string, error) {
	argv := append([]string{"nsenter"}, nsArgs(n.NetNSPath(), n.MountNS)...)
	argv = append(argv, "--", "ctr", "--address", n.ContainerdSock, "--namespace", "k8s.io")
	return run(ctx, append(argv, args...)...)
}

// Crictl runs crictl against node name's containerd and returns its
// output.
func (c *Cluster) Crictl(name string, args ...string) (string, error) {
	n, err := c.node(name)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return c.crictl(ctx, n, args...)
}

func (c *Cluster) crictl(ctx context.Context, n *Node, args ...string) (string, error) {
	return run(ctx, append([]string{"crictl", "--config", filepath.Join(n.Dir, "crictl.yaml")}, args...)...)
}

// importImage imports tar into node n's containerd and waits until the CRI
// lists it (the kubelet's imagePullPolicy Never would fail before).
func (c *Cluster) importImage(ctx context.Context, n *Node, tar string) error {
	argv := append([]string{"nsenter"}, nsArgs(n.NetNSPath(), n.MountNS)...)
	argv = append(argv, "--", "ctr", "--address", n.ContainerdSock, "--namespace", "k8s.io", "images", "import", tar)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	b, err := cmd.CombinedOutput() // the "unpacking" lines, wherever ctr prints them
	out := string(b)
	if err != nil {
		return fmt.Errorf("node %s: import %s: %w: %s", n.Name, tar, err, tail(out, 2000))
	}
	var refs []string
	for _, l := range strings.Split(out, "\n") {
		// ctr prints "unpacking REF (sha256:...)...done"
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "unpacking" {
			refs = append(refs, f[1])
		}
	}
	if len(refs) == 0 {
		return fmt.Errorf("node %s: import %s: no image named in ctr's output: %s", n.Name, tar, tail(out, 2000))
	}
	for _, ref := range refs {
		if err := c.poll(ctx, ref+" in the CRI of "+n.Name, func() error {
			_, err := c.crictl(ctx, n, "inspecti", ref)
			return err
		}); err != nil {
			return err
		}
	}
	return nil
}

// ImportImage imports an image tarball (docker-archive or OCI) into every
// node's containerd that is not stopped, in parallel, and returns once
// each node's CRI lists it.
func (c *Cluster) ImportImage(tarPath string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	errc := make(chan error, len(c.Nodes))
	for _, n := range c.Nodes {
		go func() {
			if n.isStopped() {
				errc <- nil
				return
			}
			errc <- c.importImage(ctx, n, tarPath)
		}()
	}
	var errs []error
	for range c.Nodes {
		errs = append(errs, <-errc)
	}
	return errors.Join(errs...)
}

func (n *Node) isStopped() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stopped
}

const kubeletConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# 1.35+ refuses cgroup v1 hosts unless this is false
failCgroupV1: false
# containerd 1.6 has no RuntimeConfig RPC: the kubelet falls back to this (1.37 still does; 1.38 will not)
cgroupDriver: cgroupfs
cgroupsPerQOS: true
# per node; must exist beforehand in every v1 hierarchy
cgroupRoot: %[1]q
enforceNodeAllocatable: ["pods"]
failSwapOn: false
# -999 (the default) needs CAP_SYS_RESOURCE, which root lacks here
oomScoreAdj: 0
address: %[2]q
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
# the API server reaches the kubelet without a client certificate (exec, logs)
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://%[3]s
podLogsDir: %[4]q
volumePluginDir: %[5]q
# pods never get the machine's resolver
resolvConf: ""
clusterDomain: cluster.local
# the node's capacity is the whole machine's: no disk or memory pressure surprises
evictionHard: {memory.available: "100Mi"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
registerNode: true
serializeImagePulls: false
`

// startKubelet starts node n's kubelet and kube-proxy.
func (c *Cluster) startKubelet(ctx context.Context, n *Node) error {
	conf := fmt.Sprintf(kubeletConfig, n.CgroupRoot, n.IP.String(), n.ContainerdSock,
		filepath.Join(n.Dir, "pod-logs"), filepath.Join(n.Dir, "volume-plugins"))
	file := filepath.Join(n.Dir, "kubelet.yaml")
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		return err
	}
	if _, err := c.spawn("kubelet-"+n.Name, n, filepath.Join(c.bin, "kubelet"), "--config="+file,
		"--kubeconfig="+n.Kubeconfig, "--root-dir="+filepath.Join(n.Dir, "kubelet"),
		"--cert-dir="+filepath.Join(n.Dir, "kubelet", "pki"), "--hostname-override="+n.Name,
		"--node-ip="+n.IP.String(), "--v="+strconv.Itoa(c.opts.KubeletVerbosity)); err != nil {
		return err
	}
	// The conntrack flags at 0 keep kube-proxy from writing the global
	// nf_conntrack sysctls; the rest of its state is in the node's netns.
	_, err := c.spawn("kube-proxy-"+n.Name, n, filepath.Join(c.bin, "kube-proxy"), "--kubeconfig="+n.Kubeconfig,
		"--hostname-override="+n.Name, "--proxy-mode=nftables", "--cluster-cidr="+c.ClusterCIDR.String(),
		"--conntrack-max-per-core=0", "--conntrack-min=0", "--conntrack-tcp-timeout-established=0",
		"--conntrack-tcp-timeout-close-wait=0", "--conntrack-udp-timeout=0", "--conntrack-udp-timeout-stream=0",
		"--healthz-bind-address=127.0.0.1:10256", "--metrics-bind-address=127.0.0.1:10249", "--v=2")
	return err
}
