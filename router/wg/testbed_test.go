package wg

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// testbed is two network namespaces joined by a veth, each the home of one
// WireGuard device. Everything is named with a random prefix and removed by
// t.Cleanup, datapath processes included.
type testbed struct {
	prefix     string
	ns         [2]string      // netns names
	handle     [2]ns.NetNS    // open handles
	underlay   [2]string      // veth addresses, no prefix length
	wgAddr     [2]string      // WireGuard link addresses
	iface      [2]string      // WireGuard interface names
	priv       [2]wgtypes.Key // private keys
	listenPort int
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("no /dev/net/tun: %v", err)
	}
}

func run(t *testing.T, argv ...string) string {
	t.Helper()
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%q: %v\n%s", argv, err, out)
	}
	return string(out)
}

func newTestbed(t *testing.T) *testbed {
	t.Helper()
	var rnd [3]byte
	rand.Read(rnd[:])
	p := "wgt" + hex.EncodeToString(rnd[:2])
	tb := &testbed{
		prefix:     p,
		ns:         [2]string{p + "a", p + "b"},
		underlay:   [2]string{fmt.Sprintf("10.213.%d.1", rnd[2]), fmt.Sprintf("10.213.%d.2", rnd[2])},
		wgAddr:     [2]string{"10.77.0.1", "10.77.0.2"},
		iface:      [2]string{p + "a", p + "b"},
		listenPort: 51820,
	}
	for i := range 2 {
		tb.priv[i] = mustKey(t)
		run(t, "ip", "netns", "add", tb.ns[i])
		t.Cleanup(func() { tb.cleanupSide(t, i) })
		h, err := ns.GetNS(filepath.Join("/var/run/netns", tb.ns[i]))
		if err != nil {
			t.Fatalf("GetNS %s: %v", tb.ns[i], err)
		}
		t.Cleanup(func() { h.Close() })
		tb.handle[i] = h
		run(t, "ip", "-n", tb.ns[i], "link", "set", "lo", "up")
	}
	run(t, "ip", "link", "add", p+"va", "netns", tb.ns[0], "type", "veth", "peer", "name", p+"vb", "netns", tb.ns[1])
	for i, v := range []string{p + "va", p + "vb"} {
		run(t, "ip", "-n", tb.ns[i], "addr", "add", tb.underlay[i]+"/24", "dev", v)
		run(t, "ip", "-n", tb.ns[i], "link", "set", v, "up")
	}
	return tb
}

// cleanupSide kills a datapath left running, removes its files and the
// namespace.
func (tb *testbed) cleanupSide(t *testing.T, i int) {
	name := tb.iface[i]
	if pid, err := readPidfile(name); err == nil && isDatapath(pid, name) {
		unix.Kill(pid, unix.SIGKILL)
		reapWait(pid, 5*time.Second)
	}
	os.Remove(socketPath(name))
	os.Remove(pidPath(name))
	if out, err := exec.Command("ip", "netns", "del", tb.ns[i]).CombinedOutput(); err != nil {
		t.Logf("ip netns del %s: %v %s", tb.ns[i], err, out)
	}
}

// config is the Ensure config of side i; the datapath runs as this test
// binary in datapath-helper mode.
func (tb *testbed) config(t *testing.T, i int) Config {
	c := DefaultConfig()
	c.Name = tb.iface[i]
	c.DatapathCommand = []string{os.Args[0], "datapath-helper"}
	c.DatapathLog = filepath.Join(t.TempDir(), "datapath.log")
	c.ForceUserspace = i == 0 // side b exercises the kernel probe and its fallback
	return c
}

// peers is the peer list of side i: the other side.
func (tb *testbed) peers(i int) []Peer {
	o := 1 - i
	return []Peer{{
		PublicKey:  tb.priv[o].PublicKey().String(),
		Endpoint:   netip.MustParseAddrPort(fmt.Sprintf("%s:%d", tb.underlay[o], tb.listenPort)),
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix(tb.wgAddr[o] + "/32")},
		Keepalive:  0,
	}}
}

// in runs f in side i's namespace.
func (tb *testbed) in(t *testing.T, i int, f func() error) {
	t.Helper()
	if err := tb.handle[i].Do(func(ns.NetNS) error { return f() }); err != nil {
		t.Fatalf("in %s: %v", tb.ns[i], err)
	}
}

// ensure runs Ensure and Configure in side i's namespace.
func (tb *testbed) ensure(t *testing.T, i int) *Device {
	t.Helper()
	var dev *Device
	tb.in(t, i, func() error {
		var err error
		if dev, err = Ensure(t.Context(), tb.config(t, i)); err != nil {
			return err
		}
		return dev.Configure(tb.priv[i].String(), tb.listenPort, tb.peers(i))
	})
	return dev
}

// ensureInChild runs Ensure and Configure of side i in a child process (a
// control plane the test can kill -9) and returns it once configured.
func (tb *testbed) ensureInChild(t *testing.T, i int) *exec.Cmd {
	t.Helper()
	spec, err := json.Marshal(helperSpec{Config: tb.config(t, i), PrivateKey: tb.priv[i].String(), ListenPort: tb.listenPort, Peers: tb.peers(i)})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "ensure-helper", string(spec))
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	tb.in(t, i, cmd.Start)
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		t.Fatalf("ensure-helper: %q, %v", line, err)
	}
	return cmd
}

// address gives side i's WireGuard link its address and a route to the
// other side.
func (tb *testbed) address(t *testing.T, i int) {
	t.Helper()
	run(t, "ip", "-n", tb.ns[i], "addr", "add", tb.wgAddr[i]+"/32", "dev", tb.iface[i])
	run(t, "ip", "-n", tb.ns[i], "route", "add", tb.wgAddr[1-i]+"/32", "dev", tb.iface[i])
}

// command runs argv in side i's namespace and returns its output.
func (tb *testbed) command(t *testing.T, i int, argv ...string) (string, error) {
	t.Helper()
	var out []byte
	var err error
	tb.in(t, i, func() error {
		out, err = exec.Command(argv[0], argv[1:]...).CombinedOutput()
		return nil
	})
	return string(out), err
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
