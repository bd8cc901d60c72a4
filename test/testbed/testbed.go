// Package testbed builds weft's multi-host test bed out of network
// namespaces: a "switch" namespace holding a bridge, and N host namespaces,
// each with a veth to the switch and an underlay address. It starts real
// `weft launch` processes in hosts, runs commands there, creates pods with
// the real weft-cni binary, and cuts and heals links. Everything it creates
// carries a prefix unique to the test run and is removed by t.Cleanup, even
// when the test fails. Nothing is connected to the machine's real
// interfaces; all traffic stays inside the namespaces it made.
//
//	bed := testbed.New(t, 3)
//	h1 := bed.Hosts[0]
//	h1.Launch(t, "--insecure")
//	bed.Hosts[1].Launch(t, "--insecure", h1.Addr.String())
//	out := h1.Weft(t, "status", "--json")
package testbed

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
)

// Bed is one test bed.
type Bed struct {
	Prefix string  // unique per run, e.g. "wb3f2a"
	Switch string  // switch namespace name
	Hosts  []*Host // host namespaces
	Dir    string  // per-bed state directory
	Subnet netip.Prefix
	t      testing.TB
}

// Host is one machine of the bed.
type Host struct {
	bed   *Bed
	Index int        // 1-based
	Name  string     // peer name: h1, h2, ...
	NS    string     // namespace name
	Addr  netip.Addr // underlay address on eth0
	Dir   string     // state: data/, wireguard/, cni/, logs
	// Socket is the host's control socket.
	Socket string
	mu     sync.Mutex // guards following
	proc   *exec.Cmd
	done   chan struct{}
	logs   *os.File
	// blocking: the host's nftables table of blocked addresses exists
	// (block.go).
	blocking bool
}

var subnetSeq struct {
	sync.Mutex
	n int
}

// New creates the switch and n hosts. Namespaces are deleted in the
// reverse order of their creation, each host's processes killed first.
func New(t testing.TB, n int) *Bed {
	t.Helper()
	testutil.Root(t, "ip", "nsenter", "unshare", "mount")
	var r [1]byte
	_, _ = rand.Read(r[:])
	subnetSeq.Lock()
	subnetSeq.n++
	third := (int(r[0]) + subnetSeq.n*7) % 250
	subnetSeq.Unlock()
	b := &Bed{
		Prefix: testutil.Prefix("wb"),
		Dir:    t.TempDir(),
		Subnet: netip.MustParsePrefix(fmt.Sprintf("192.168.%d.0/24", third)),
		t:      t,
	}
	b.Switch = b.Prefix + "-sw"
	testutil.NetNS(t, b.Switch)
	b.switchWithoutNetfilter()
	b.mustIP("-n", b.Switch, "link", "add", "br0", "up", "type", "bridge")
	for i := 1; i <= n; i++ {
		b.AddHost()
	}
	return b
}

// switchWithoutNetfilter keeps bridged frames out of the switch
// namespace's netfilter hooks, as a real switch would. Where br_netfilter
// is loaded (Kubernetes nodes load it; this machine has it loaded)
// its call-iptables knobs default to 1 in every new namespace, and every
// frame the switch forwards went through the IPv4 hooks and a route
// lookup: 2 % of a 100-peer start's samples. The knobs are per namespace:
// the machine's own stay as they are. Absent without the module.
func (b *Bed) switchWithoutNetfilter() {
	for _, k := range []string{"iptables", "ip6tables", "arptables"} {
		if err := b.switchSysctl("net/bridge/bridge-nf-call-"+k, "0"); err != nil && !errors.Is(err, os.ErrNotExist) {
			b.t.Fatalf("switch %s: bridge netfilter off: %v", b.Switch, err)
		}
	}
}

// switchSysctl sets /proc/sys/key to value in the switch namespace.
func (b *Bed) switchSysctl(key, value string) error {
	return testutil.InNetNS(testutil.NetNSPath(b.Switch), func() error {
		return os.WriteFile("/proc/sys/"+key, []byte(value), 0o644)
	})
}

// AddHost adds one more host to the bed (e.g. a host joining later).
func (b *Bed) AddHost() *Host { return b.addHost(b.Subnet, "br0") }

// addHost adds a host on underlay subnet, its veth a port of the switch's
// bridge.
func (b *Bed) addHost(subnet netip.Prefix, bridge string) *Host {
	i := len(b.Hosts) + 1
	h := &Host{bed: b, Index: i, Name: fmt.Sprintf("h%d", i), NS: fmt.Sprintf("%s-h%d", b.Prefix, i),
		Addr: subnet.Addr().Next().Next().Next().Next().Next().Next().Next().Next().Next().Next()}
	for j := 0; j < i; j++ {
		h.Addr = h.Addr.Next()
	}
	h.Dir = filepath.Join(b.Dir, h.Name)
	h.Socket = filepath.Join(h.Dir, "weft.sock")
	for _, d := range []string{"data", "wireguard", "cni"} {
		if err := os.MkdirAll(filepath.Join(h.Dir, d), 0o700); err != nil {
			b.t.Fatalf("mkdir: %v", err)
		}
	}
	testutil.NetNS(b.t, h.NS)
	b.t.Cleanup(func() { h.Kill(); h.killDatapaths() }) // before its namespace goes
	// Both ends are made in their namespaces: moving a link costs the
	// kernel a grace period.
	b.mustIP("link", "add", "eth0", "netns", h.NS, "type", "veth", "peer", "name", h.SwitchPort(), "netns", b.Switch)
	b.mustIP("-n", b.Switch, "link", "set", h.SwitchPort(), "master", bridge, "up")
	b.mustIP("-n", h.NS, "addr", "add", fmt.Sprintf("%s/%d", h.Addr, subnet.Bits()), "dev", "eth0")
	b.mustIP("-n", h.NS, "link", "set", "eth0", "up")
	b.Hosts = append(b.Hosts, h)
	return h
}

// AddNamespace creates a bare namespace the bed will delete (pods, servers).
func (b *Bed) AddNamespace(name string) string {
	full := b.Prefix + "-" + name
	testutil.NetNS(b.t, full)
	return full
}

// AddInternet creates a host on the underlay switch that is not a weft
// peer (an "internet" server), returning its namespace and address.
func (b *Bed) AddInternet() (string, netip.Addr) {
	ns := b.AddNamespace("inet")
	addr := b.Subnet.Addr().Next().Next().Next() // .3
	veth, sw := b.Prefix+"-in", b.Prefix+"-si"
	b.mustIP("link", "add", veth, "netns", ns, "type", "veth", "peer", "name", sw, "netns", b.Switch)
	b.mustIP("-n", b.Switch, "link", "set", sw, "master", "br0", "up")
	b.mustIP("-n", ns, "addr", "add", fmt.Sprintf("%s/%d", addr, b.Subnet.Bits()), "dev", veth)
	b.mustIP("-n", ns, "link", "set", veth, "up")
	return ns, addr
}

func (b *Bed) mustIP(args ...string) {
	b.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		b.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// Cut takes the host's link to the switch down (a partition).
func (h *Host) Cut() {
	h.bed.mustIP("-n", h.bed.Switch, "link", "set", h.SwitchPort(), "down")
}

// Heal brings the host's link back.
func (h *Host) Heal() {
	h.bed.mustIP("-n", h.bed.Switch, "link", "set", h.SwitchPort(), "up")
}

// DatapathPIDs returns the pids of the running userspace WireGuard
// processes this host started: from their pidfiles in the host's private
// /run/wireguard, each checked to be a live datapath process (its command
// line has --iface), so that a stale pidfile naming a pid the system has
// since given to another process is never taken for one.
func (h *Host) DatapathPIDs() []int {
	files, _ := filepath.Glob(filepath.Join(h.Dir, "wireguard", "*.pid"))
	var pids []int
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var pid int
		if _, err := fmt.Sscan(string(b), &pid); err != nil || pid <= 1 {
			continue
		}
		if cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && strings.Contains(string(cmd), "\x00--iface\x00") {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killDatapaths ends the userspace WireGuard processes this host started.
func (h *Host) killDatapaths() {
	for _, pid := range h.DatapathPIDs() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// wrap returns argv that runs argv inside the host: its network namespace
// and a private mount of /run/wireguard (the userspace WireGuard UAPI
// directory is shared across network namespaces otherwise).
func (h *Host) wrap(argv ...string) []string {
	script := fmt.Sprintf("mkdir -p /run/wireguard && mount --bind %s /run/wireguard && exec \"$@\"", filepath.Join(h.Dir, "wireguard"))
	return append([]string{"nsenter", "--net=/var/run/netns/" + h.NS, "--", "unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"}, argv...)
}

// Command returns a command that runs argv in the host.
func (h *Host) Command(ctx context.Context, argv ...string) *exec.Cmd {
	w := h.wrap(argv...)
	return exec.CommandContext(ctx, w[0], w[1:]...)
}

// Run runs argv in the host and returns its combined output.
func (h *Host) Run(argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := h.Command(ctx, argv...).CombinedOutput()
	return string(out), err
}

// MustRun runs argv in the host and fails the test on error.
func (h *Host) MustRun(t testing.TB, argv ...string) string {
	t.Helper()
	out, err := h.Run(argv...)
	if err != nil {
		t.Fatalf("%s on %s: %v\n%s", strings.Join(argv, " "), h.Name, err, out)
	}
	return out
}

// Weft runs the weft CLI against this host's peer (stdout only).
func (h *Host) Weft(args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, Binary("weft"), append([]string{"--socket", h.Socket}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// ResetArgs is `weft reset` for this host's peer, with the host's own CNI
// directories (the machine's /etc/cni and /opt/cni are not the test's).
func (h *Host) ResetArgs() []string {
	return []string{Binary("weft"), "reset", "--socket", h.Socket,
		"--cni-conf-dir", filepath.Join(h.Dir, "cni", "net.d"), "--cni-bin-dir", filepath.Join(h.Dir, "cni", "bin")}
}

// LaunchArgs are the flags every test-bed peer gets: its own name, state,
// socket and addresses.
func (h *Host) LaunchArgs() []string {
	return []string{"--name", h.Name, "--data-dir", filepath.Join(h.Dir, "data"), "--socket", h.Socket,
		"--http-addr", h.Addr.String() + ":6784", "--listen", "0.0.0.0:6783", "--advertise", h.Addr.String(),
		"--log-level", "debug", "--resync", "2s"}
}

// Launch starts `weft launch` in the host with LaunchArgs plus args.
func (h *Host) Launch(t testing.TB, args ...string) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.proc != nil {
		t.Fatalf("%s: weft already running", h.Name)
	}
	logf, err := os.OpenFile(filepath.Join(h.Dir, "weft.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatalf("log file: %v", err)
	}
	fmt.Fprintf(logf, "\n==== launch %s %v\n", time.Now().Format(time.RFC3339Nano), args)
	la := h.LaunchArgs()
	if !slices.Contains(args, "--dns-upstream") {
		// Never let a test forward DNS to the machine's real resolver: by
		// default the peers' upstream is a closed port on the host's own
		// loopback (forwarded queries get SERVFAIL at once).
		la = append(la, "--dns-upstream", "127.0.0.1:1")
	}
	w := h.wrap(append([]string{Binary("weft"), "launch"}, append(la, args...)...)...)
	cmd := exec.Command(w[0], w[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "WEFT_PASSWORD=")
	if err := cmd.Start(); err != nil {
		t.Fatalf("launch on %s: %v", h.Name, err)
	}
	h.proc, h.logs, h.done = cmd, logf, make(chan struct{})
	done := h.done
	go func() { _ = cmd.Wait(); close(done) }()
}

// Running reports whether the launched process is still running.
func (h *Host) Running() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.proc == nil {
		return false
	}
	select {
	case <-h.done:
		return false
	default:
		return true
	}
}

// Wait waits for the launched process to exit and returns its exit code.
func (h *Host) Wait(d time.Duration) (int, bool) {
	h.mu.Lock()
	p, done := h.proc, h.done
	h.mu.Unlock()
	if p == nil {
		return -1, false
	}
	select {
	case <-done:
		return p.ProcessState.ExitCode(), true
	case <-time.After(d):
		return -1, false
	}
}

// Kill sends SIGKILL to the peer (a crash): the datapath process survives.
func (h *Host) Kill() { h.signal(syscall.SIGKILL) }

// Stop sends SIGTERM (a graceful stop) and waits for the exit.
func (h *Host) Stop() { h.signal(syscall.SIGTERM) }

func (h *Host) signal(sig syscall.Signal) {
	h.mu.Lock()
	p, done, logs := h.proc, h.done, h.logs
	h.proc = nil
	h.mu.Unlock()
	if p == nil {
		return
	}
	_ = p.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = p.Process.Kill()
		<-done
	}
	logs.Close()
}

// Log returns the host's weft log so far.
func (h *Host) Log() string {
	b, _ := os.ReadFile(filepath.Join(h.Dir, "weft.log"))
	return string(b)
}

// LastLog returns the host's log since its latest launch.
func (h *Host) LastLog() string {
	l := h.Log()
	if i := strings.LastIndex(l, "\n==== launch "); i >= 0 {
		return l[i:]
	}
	return l
}

// DumpLogsOnFailure attaches the end of every host's log to a failing
// test, and keeps the whole logs (every launch of each host) in a new
// directory under the system's temporary directory, named in the output:
// the test's own directory goes with it, and a failure of a long run (the
// soak) is often explained minutes before the last 20 KB.
func (b *Bed) DumpLogsOnFailure(t testing.TB) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, h := range b.Hosts {
			l := h.Log()
			if len(l) > 20000 {
				l = "..." + l[len(l)-20000:]
			}
			t.Logf("==== log of %s\n%s", h.Name, l)
		}
		dir, err := os.MkdirTemp("", "weft-logs-")
		if err == nil {
			err = b.KeepLogs(dir)
		}
		if err != nil {
			t.Logf("keep the logs: %v", err)
			return
		}
		t.Logf("the whole logs of every host are in %s", dir)
	})
}

// KeepLogs writes every host's whole log (every launch) to dir, as
// NAME.log, creating dir if needed.
func (b *Bed) KeepLogs(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, h := range b.Hosts {
		if err := os.WriteFile(filepath.Join(dir, h.Name+".log"), []byte(h.Log()), 0o644); err != nil {
			return fmt.Errorf("keep %s's log: %w", h.Name, err)
		}
	}
	return nil
}

var build struct {
	once sync.Once
	dir  string
	err  error
}

// Binary returns the path of a freshly built weft binary ("weft",
// "weft-cni" or "weft-datapath", which `weft launch` starts from beside
// itself), building all three once per test process. With WEFT_RACE=1 in
// the environment (`RACE=1 make soak`) they are built with the race
// detector, so a race in a peer shows in its log.
func Binary(name string) string {
	build.once.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		build.dir, build.err = os.MkdirTemp("", "weft-testbin-")
		if build.err != nil {
			return
		}
		for _, b := range []string{"weft", "weft-cni", "weft-datapath"} {
			args := []string{"build", "-o", filepath.Join(build.dir, b)}
			if os.Getenv("WEFT_RACE") == "1" {
				args = append(args, "-race")
			}
			cmd := exec.Command("go", append(args, "./cmd/"+b)...)
			cmd.Dir = root
			if out, err := cmd.CombinedOutput(); err != nil {
				build.err = fmt.Errorf("go build %s: %v\n%s", b, err, out)
				return
			}
		}
	})
	if build.err != nil {
		panic(build.err)
	}
	return filepath.Join(build.dir, name)
}

// CleanupBinaries removes the built binaries (call from TestMain).
func CleanupBinaries() {
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
}

// PID returns the pid of the running weft peer (nsenter, unshare and sh
// exec into it, so it is the launched process itself), or 0.
func (h *Host) PID() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.proc == nil || h.proc.Process == nil {
		return 0
	}
	return h.proc.Process.Pid
}
