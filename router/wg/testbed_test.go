package wg

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/weftmesh/weft/test/testbed"
)

// bed is test/testbed's bed with two hosts on its switch, each the home of
// one WireGuard device. Everything is named with the bed's random prefix
// and removed by t.Cleanup, datapath processes included.
type bed struct {
	*testbed.Bed
	wgAddr     [2]string      // WireGuard link addresses
	iface      [2]string      // WireGuard interface names
	priv       [2]wgtypes.Key // private keys
	listenPort int
}

func run(t *testing.T, argv ...string) string {
	t.Helper()
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%q: %v\n%s", argv, err, out)
	}
	return string(out)
}

func newTestbed(t *testing.T) *bed {
	t.Helper()
	tb := &bed{Bed: testbed.New(t, 2), wgAddr: [2]string{"10.77.0.1", "10.77.0.2"}, listenPort: 51820}
	for i := range 2 {
		tb.iface[i] = fmt.Sprintf("%s-wg%c", tb.Prefix, 'a'+i)
		tb.priv[i] = mustKey(t)
		t.Cleanup(func() { tb.stopDatapath(i) }) // before the bed removes the namespaces
	}
	return tb
}

// stopDatapath kills a datapath of side i left running and removes its
// files.
func (tb *bed) stopDatapath(i int) {
	name := tb.iface[i]
	if pid, err := readPidfile(name); err == nil && isDatapath(pid, name) {
		unix.Kill(pid, unix.SIGKILL)
		reapWait(pid, 5*time.Second)
	}
	os.Remove(socketPath(name))
	os.Remove(pidPath(name))
}

// config is the Ensure config of side i; the datapath runs as this test
// binary in datapath-helper mode.
func (tb *bed) config(t *testing.T, i int) Config {
	c := DefaultConfig()
	c.Name = tb.iface[i]
	c.DatapathCommand = []string{os.Args[0], "datapath-helper"}
	c.DatapathLog = filepath.Join(t.TempDir(), "datapath.log")
	c.ForceUserspace = i == 0 // side b exercises the kernel probe and its fallback
	return c
}

// peers is the peer list of side i: the other side.
func (tb *bed) peers(i int) []Peer {
	o := 1 - i
	return []Peer{{
		PublicKey:  tb.priv[o].PublicKey().String(),
		Endpoint:   netip.AddrPortFrom(tb.Hosts[o].Addr, uint16(tb.listenPort)),
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix(tb.wgAddr[o] + "/32")},
		Keepalive:  0,
	}}
}

// in runs f in side i's namespace.
func (tb *bed) in(t *testing.T, i int, f func() error) {
	t.Helper()
	if err := tb.Hosts[i].InNS(f); err != nil {
		t.Fatalf("in %s: %v", tb.Hosts[i].NS, err)
	}
}

// ensure runs Ensure and Configure in side i's namespace.
func (tb *bed) ensure(t *testing.T, i int) *Device {
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
func (tb *bed) ensureInChild(t *testing.T, i int) *exec.Cmd {
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
func (tb *bed) address(t *testing.T, i int) {
	t.Helper()
	run(t, "ip", "-n", tb.Hosts[i].NS, "addr", "add", tb.wgAddr[i]+"/32", "dev", tb.iface[i])
	run(t, "ip", "-n", tb.Hosts[i].NS, "route", "add", tb.wgAddr[1-i]+"/32", "dev", tb.iface[i])
}

// command runs argv in side i's namespace and returns its output.
func (tb *bed) command(t *testing.T, i int, argv ...string) (string, error) {
	t.Helper()
	var out []byte
	var err error
	tb.in(t, i, func() error {
		out, err = exec.Command(argv[0], argv[1:]...).CombinedOutput()
		return nil
	})
	return string(out), err
}
