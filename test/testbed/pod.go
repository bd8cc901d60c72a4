package testbed

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/api/client"
)

// Status returns the host's `weft status --json`.
func (h *Host) Status() (*client.Status, error) {
	out, stderr, err := h.Weft("status", "--json")
	if err != nil {
		return nil, fmt.Errorf("weft status on %s: %v: %s", h.Name, err, stderr)
	}
	var st client.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("decode status of %s: %v", h.Name, err)
	}
	return &st, nil
}

// APIStatus returns the host's status read from its control socket, as
// `weft status` reads it but without an exec: for polling many hosts at
// once (an exec per host would load the machine under test).
func (h *Host) APIStatus(ctx context.Context) (*client.Status, error) {
	st, err := client.New(h.Socket).Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", h.Name, err)
	}
	return st, nil
}

// AliveCount returns how many peers (itself included) the host sees alive.
func (h *Host) AliveCount() (int, error) {
	st, err := h.Status()
	if err != nil {
		return 0, err
	}
	return AliveIn(st), nil
}

// AliveIn counts the peers st lists alive (the host itself included).
func AliveIn(st *client.Status) int {
	n := 0
	for _, p := range st.Peers {
		if p.State == "alive" {
			n++
		}
	}
	return n
}

// Pod is a namespace wired to a host by the real weft-cni binary.
type Pod struct {
	Host        *Host
	NS          string // namespace name (under /var/run/netns)
	ContainerID string
	Addr        netip.Prefix
	Result      map[string]any
}

// CNIConfig is the network config weft-cni gets on stdin for this host.
func (h *Host) CNIConfig(version string) string {
	return fmt.Sprintf(`{"cniVersion":%q,"name":"weft","type":"weft-cni","socket":%q,"dataDir":%q}`,
		version, h.Socket, filepath.Join(h.Dir, "data"))
}

// CNI executes weft-cni in the host with the given command and env.
func (h *Host) CNI(command, containerID, netns, ifname, args, stdin string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := h.Command(ctx, "env", "CNI_COMMAND="+command, "CNI_CONTAINERID="+containerID, "CNI_NETNS="+netns,
		"CNI_IFNAME="+ifname, "CNI_PATH="+filepath.Dir(Binary("weft-cni")), "CNI_ARGS="+args, Binary("weft-cni"))
	cmd.Stdin = strings.NewReader(stdin)
	var out strings.Builder
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	err := cmd.Run()
	return out.String(), err
}

// AddPod creates a pod namespace and runs CNI ADD for it.
func (h *Host) AddPod(t testing.TB, name string) *Pod {
	t.Helper()
	ns := h.bed.AddNamespace(h.Name + name)
	p := &Pod{Host: h, NS: ns, ContainerID: h.bed.Prefix + "-" + h.Name + "-" + name}
	args := fmt.Sprintf("IgnoreUnknown=1;K8S_POD_NAME=%s;K8S_POD_NAMESPACE=%s", name, h.Name)
	out, err := h.CNI("ADD", p.ContainerID, "/var/run/netns/"+ns, "eth0", args, h.CNIConfig("1.0.0"))
	if err != nil {
		t.Fatalf("CNI ADD %s on %s: %v: %s", name, h.Name, err, out)
	}
	if err := json.Unmarshal([]byte(out), &p.Result); err != nil {
		t.Fatalf("CNI ADD result: %v: %s", err, out)
	}
	ips, _ := p.Result["ips"].([]any)
	if len(ips) == 0 {
		t.Fatalf("CNI ADD result has no ips: %s", out)
	}
	p.Addr = netip.MustParsePrefix(ips[0].(map[string]any)["address"].(string))
	return p
}

// Del runs CNI DEL for the pod.
func (p *Pod) Del(t testing.TB) {
	t.Helper()
	if out, err := p.Host.CNI("DEL", p.ContainerID, "/var/run/netns/"+p.NS, "eth0", "", p.Host.CNIConfig("1.0.0")); err != nil {
		t.Fatalf("CNI DEL: %v: %s", err, out)
	}
}

// Exec runs argv inside the pod's namespace.
func (p *Pod) Exec(argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=/var/run/netns/" + p.NS, "--"}, argv...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Ping sends count pings from the pod to addr and reports whether all
// (with one retry round) were answered.
func (p *Pod) Ping(addr netip.Addr) error {
	out, err := p.Exec("ping", "-c", "2", "-W", "2", "-i", "0.2", "-q", addr.String())
	if err != nil {
		return fmt.Errorf("ping %s from %s: %v: %s", addr, p.NS, err, out)
	}
	return nil
}
