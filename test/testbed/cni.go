package testbed

// Helpers for the CNI end-to-end tests: cnitool, `weft setup-cni` into a
// host's own CNI directories, and a real container runtime (containerd +
// runc, driven over CRI with crictl) running inside a host, with a locally
// built pause image so no registry is needed.
//
//	bin, conf := h.SetupCNI(t)
//	tool := BuildCNITool(t)
//	ctrd := h.StartContainerd(t, bin, conf)
//	id := ctrd.RunPod(t, "web", "shop")
//	info, err := ctrd.Inspect(id)      // IP, pause PID (netns /proc/PID/ns/net)
//	err = ctrd.RemovePod(id)           // crictl stopp + rmp

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// RefCNIDir holds Debian's reference CNI plugins (containernetworking-plugins).
const RefCNIDir = "/usr/lib/cni"

// BuildCNITool builds cnitool (a tool dependency in go.mod) into a
// directory of t's and returns its path.
func BuildCNITool(t testing.TB) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "cnitool")
	cmd := exec.Command("go", "build", "-o", out, "github.com/containernetworking/cni/cnitool")
	cmd.Dir = repoRoot()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build cnitool: %v\n%s", err, b)
	}
	return out
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// SetupCNI runs `weft setup-cni` for h into h.Dir/cni/bin and
// h.Dir/cni/net.d, with the conflist pointing at h's socket and data
// directory. The reference loopback and portmap plugins are linked into the
// bin directory first (a runtime needs loopback; portmap makes setup-cni
// chain it, as on a real node).
func (h *Host) SetupCNI(t testing.TB) (binDir, confDir string) {
	t.Helper()
	binDir, confDir = filepath.Join(h.Dir, "cni", "bin"), filepath.Join(h.Dir, "cni", "net.d")
	for _, d := range []string{binDir, confDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatalf("setup-cni: %v", err)
		}
	}
	for _, p := range []string{"loopback", "portmap"} {
		if err := os.Symlink(filepath.Join(RefCNIDir, p), filepath.Join(binDir, p)); err != nil && !os.IsExist(err) {
			t.Fatalf("setup-cni: link %s: %v", p, err)
		}
	}
	out, err := exec.Command(Binary("weft"), "setup-cni", "--bin-dir", binDir, "--conf-dir", confDir,
		"--cni-bin", Binary("weft-cni"), "--socket", h.Socket, "--data-dir", filepath.Join(h.Dir, "data")).CombinedOutput()
	if err != nil {
		t.Fatalf("weft setup-cni on %s: %v\n%s", h.Name, err, out)
	}
	return binDir, confDir
}

// NeedCRI skips t unless containerd, runc, ctr and crictl are installed
// (scripts/deps-cri.sh installs them).
func NeedCRI(t testing.TB) {
	t.Helper()
	for _, tool := range []string{"containerd", "runc", "ctr", "crictl", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: run 'sudo bash scripts/deps-cri.sh'", tool)
		}
	}
	if _, err := os.Stat(filepath.Join(RefCNIDir, "loopback")); err != nil {
		t.Skipf("needs %s/loopback: run 'sudo bash scripts/deps-cri.sh'", RefCNIDir)
	}
}

// Veths returns the names of the veth links in the host's namespace (its
// eth0 to the switch and the host ends of its pods).
func (h *Host) Veths() ([]string, error) {
	out, err := exec.Command("ip", "-n", h.NS, "-j", "link", "show", "type", "veth").Output()
	if err != nil {
		return nil, fmt.Errorf("ip link in %s: %w", h.NS, err)
	}
	var links []struct {
		Name string `json:"ifname"`
	}
	if err := json.Unmarshal(out, &links); err != nil {
		return nil, fmt.Errorf("ip link in %s: %w", h.NS, err)
	}
	names := make([]string, 0, len(links))
	for _, l := range links {
		names = append(names, l.Name)
	}
	return names, nil
}

// PodInfo is what a runtime reports about one pod sandbox.
type PodInfo struct {
	ID    string
	IP    netip.Addr
	PID   int    // the pause process; its netns is /proc/PID/ns/net
	NetNS string // the path the runtime gave CNI (in the runtime's mount namespace)
}

// Exec runs argv in the pod's network namespace (through its pause process).
func (p PodInfo) Exec(argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{fmt.Sprintf("--net=/proc/%d/ns/net", p.PID), "--"}, argv...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Listen opens a TCP listener inside the pod's network namespace.
func (p PodInfo) Listen(addr string) (net.Listener, error) {
	errc := make(chan error, 1)
	var l net.Listener
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with this goroutine
		h, err := netns.GetFromPath(fmt.Sprintf("/proc/%d/ns/net", p.PID))
		if err != nil {
			errc <- err
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- err
			return
		}
		l, err = net.Listen("tcp", addr)
		errc <- err
	}()
	if err := <-errc; err != nil {
		return nil, fmt.Errorf("listen %s in pod %.12s: %w", addr, p.ID, err)
	}
	return l, nil
}

// Ping sends two pings from the pod to addr.
func (p PodInfo) Ping(addr netip.Addr) error {
	if out, err := p.Exec("ping", "-c", "2", "-W", "2", "-i", "0.2", "-q", addr.String()); err != nil {
		return fmt.Errorf("ping %s from pod %.12s: %v: %s", addr, p.ID, err, out)
	}
	return nil
}
