package testbed

// A real container runtime inside a host: containerd (CRI plugin) + runc,
// executing the CNI plugins of the host's conflist exactly as under a
// kubelet, driven with crictl. Each runtime has its own root, state,
// socket, runc root and pod cgroup parent under the bed, and is started
// inside the host (its network namespace, a private mount namespace).

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
)

// Containerd is one containerd running inside a host.
type Containerd struct {
	Host   *Host
	Dir    string // root, state, socket, logs, pod configs
	Sock   string // CRI/containerd API socket
	cgroup string // cgroup_parent of the pods, e.g. /wb3f2apods-h1
	cmd    *exec.Cmd
	done   chan struct{}
}

// StartContainerd starts containerd in h with CNI from binDir/confDir, waits
// until it answers, imports the pause image and registers its teardown
// (pods removed, containerd and its shims ended, cgroups removed).
func (h *Host) StartContainerd(t testing.TB, binDir, confDir string) *Containerd {
	t.Helper()
	NeedCRI(t)
	c := &Containerd{Host: h, Dir: filepath.Join(h.Dir, "containerd"), cgroup: "/" + h.bed.Prefix + "pods-" + h.Name}
	c.Sock = filepath.Join(c.Dir, "containerd.sock")
	if err := os.MkdirAll(filepath.Join(c.Dir, "pods"), 0o755); err != nil {
		t.Fatalf("containerd dir: %v", err)
	}
	image := buildPauseImage(t, c.Dir)
	if err := os.WriteFile(filepath.Join(c.Dir, "containerd.toml"), []byte(c.config(binDir, confDir)), 0o644); err != nil {
		t.Fatalf("containerd config: %v", err)
	}
	if err := os.WriteFile(filepath.Join(c.Dir, "crictl.yaml"),
		fmt.Appendf(nil, "runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 60\n", c.Sock, c.Sock), 0o644); err != nil {
		t.Fatalf("crictl config: %v", err)
	}
	logf, err := os.Create(filepath.Join(c.Dir, "containerd.log"))
	if err != nil {
		t.Fatalf("containerd log: %v", err)
	}
	c.cmd = h.Command(context.Background(), "containerd", "--config", filepath.Join(c.Dir, "containerd.toml"))
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start containerd in %s: %v", h.Name, err)
	}
	c.done = make(chan struct{})
	go func() { _ = c.cmd.Wait(); logf.Close(); close(c.done) }()
	t.Cleanup(func() { c.teardown(t) })
	testutil.Eventually(t, 30*time.Second, "containerd on "+h.Name+" to answer", func() error {
		select {
		case <-c.done:
			b, _ := os.ReadFile(filepath.Join(c.Dir, "containerd.log"))
			t.Fatalf("containerd on %s exited:\n%s", h.Name, tail(string(b), 3000))
		default:
		}
		_, err := c.ctr("version")
		return err
	})
	if out, err := c.ctr("images", "import", image); err != nil {
		t.Fatalf("import pause image: %v: %s", err, out)
	}
	testutil.Eventually(t, 30*time.Second, "CRI on "+h.Name+" to list the pause image", func() error {
		out, err := c.Crictl("images", "-q")
		if err != nil {
			return err
		}
		if !strings.Contains(out, "sha256:") {
			return fmt.Errorf("no image yet: %q", out)
		}
		return nil
	})
	return c
}

func (c *Containerd) config(binDir, confDir string) string {
	return testutil.ContainerdConfig(testutil.ContainerdPaths{Dir: c.Dir, Socket: c.Sock, SandboxImage: pauseImage,
		CNIBinDir: binDir, CNIConfDir: confDir})
}

// ctr runs containerd's ctr against this runtime's k8s.io namespace.
func (c *Containerd) ctr(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ctr", append([]string{"--address", c.Sock, "--namespace", "k8s.io"}, args...)...).CombinedOutput()
	return string(out), err
}

// Crictl runs crictl against this runtime and returns its stdout.
func (c *Containerd) Crictl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "crictl", append([]string{"--config", filepath.Join(c.Dir, "crictl.yaml"),
		"--runtime-endpoint", "unix://" + c.Sock, "--image-endpoint", "unix://" + c.Sock, "--timeout", "90s"}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("crictl %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

// PortMapping is a pod's hostPort (TCP): the runtime hands it to the
// chained portmap plugin.
type PortMapping struct {
	ContainerPort, HostPort int
}

// RunPod runs a pod sandbox (crictl runp) named name in namespace ns and
// returns its ID; the runtime calls CNI ADD for it.
func (c *Containerd) RunPod(t testing.TB, name, ns string, ports ...PortMapping) string {
	t.Helper()
	id, err := c.TryRunPod(name, ns, ports...)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TryRunPod is RunPod returning the error.
func (c *Containerd) TryRunPod(name, ns string, ports ...PortMapping) (string, error) {
	dir := filepath.Join(c.Dir, "pods", name)
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		return "", err
	}
	spec := map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": ns, "uid": fmt.Sprintf("uid-%s-%d", name, time.Now().UnixNano()), "attempt": 0},
		"hostname":      name,
		"log_directory": filepath.Join(dir, "logs"),
		"labels":        map[string]string{"app": name},
		"linux": map[string]any{"cgroup_parent": c.cgroup,
			"security_context": map[string]any{"namespace_options": map[string]int{"network": 0, "pid": 0, "ipc": 0}}},
	}
	var pm []map[string]int
	for _, p := range ports {
		pm = append(pm, map[string]int{"protocol": 0, "container_port": p.ContainerPort, "host_port": p.HostPort})
	}
	if len(pm) > 0 {
		spec["port_mappings"] = pm
	}
	b, _ := json.Marshal(spec)
	file := filepath.Join(dir, "pod.json")
	if err := os.WriteFile(file, b, 0o644); err != nil {
		return "", err
	}
	out, err := c.Crictl("runp", file)
	if err != nil {
		return "", fmt.Errorf("run pod %s/%s on %s: %w", ns, name, c.Host.Name, err)
	}
	return strings.TrimSpace(out), nil
}

// Inspect returns the pod's address and pause process.
func (c *Containerd) Inspect(id string) (PodInfo, error) {
	out, err := c.Crictl("inspectp", "-o", "json", id)
	if err != nil {
		return PodInfo{}, err
	}
	var doc struct {
		Status struct {
			Network struct {
				IP string `json:"ip"`
			} `json:"network"`
		} `json:"status"`
		Info struct {
			PID         int `json:"pid"`
			RuntimeSpec struct {
				Linux struct {
					Namespaces []struct {
						Type string `json:"type"`
						Path string `json:"path"`
					} `json:"namespaces"`
				} `json:"linux"`
			} `json:"runtimeSpec"`
		} `json:"info"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		return PodInfo{}, fmt.Errorf("inspectp %s: %w", id, err)
	}
	info := PodInfo{ID: id, PID: doc.Info.PID}
	if info.IP, err = netip.ParseAddr(doc.Status.Network.IP); err != nil {
		return info, fmt.Errorf("inspectp %s: pod IP %q: %w", id, doc.Status.Network.IP, err)
	}
	for _, n := range doc.Info.RuntimeSpec.Linux.Namespaces {
		if n.Type == "network" {
			info.NetNS = n.Path
		}
	}
	if info.PID <= 0 {
		return info, fmt.Errorf("inspectp %s: no pause pid", id)
	}
	return info, nil
}

// RemovePod stops and removes the pod (crictl stopp + rmp); the runtime
// calls CNI DEL.
func (c *Containerd) RemovePod(id string) error {
	if _, err := c.Crictl("stopp", id); err != nil {
		return err
	}
	_, err := c.Crictl("rmp", id)
	return err
}

// teardown removes every pod, stops containerd, ends shims it left and
// removes the pods' cgroups and libcni cache entries.
func (c *Containerd) teardown(t testing.TB) {
	var ids []string
	if out, err := c.Crictl("pods", "-q"); err == nil {
		ids = strings.Fields(out)
	}
	for _, id := range ids {
		if err := c.RemovePod(id); err != nil {
			t.Logf("teardown: %v", err)
		}
	}
	if c.cmd != nil && c.cmd.Process != nil {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(15 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	}
	// Shims outlive containerd; ours name our socket on their command line.
	for _, pid := range testutil.PidsWithArg(c.Sock) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	cgs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", strings.TrimPrefix(c.cgroup, "/")))
	if d := filepath.Join("/sys/fs/cgroup", strings.TrimPrefix(c.cgroup, "/")); dirExists(d) {
		cgs = append(cgs, d)
	}
	for _, cg := range cgs {
		_ = testutil.RemoveCgroupTree(cg)
	}
	// containerd 1.6 puts shim sockets in /run/containerd/s, whatever its
	// state directory; remove the directories if no runtime uses them now.
	_ = syscall.Rmdir("/run/containerd/s")
	_ = syscall.Rmdir("/run/containerd")
	for _, id := range ids {
		cached, _ := filepath.Glob("/var/lib/cni/results/*-" + id + "-*")
		for _, f := range cached {
			_ = os.Remove(f)
		}
	}
}

func dirExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
