package router_test

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/router"
	"github.com/weftmesh/weft/router/routertest"
)

func TestKernelWireGuard(t *testing.T) {
	b := newBed(t, 3, router.TransportWireGuard, router.Options{})
	for _, hn := range b.hosts {
		base := hn.cfg.BridgeAddr.Addr().As4()
		b.addPod(hn, netip.AddrFrom4([4]byte{base[0], base[1], 0, 5}))
		b.addPod(hn, netip.AddrFrom4([4]byte{base[0], base[1], 1, 6}))
	}
	h1, h2 := b.hosts[0], b.hosts[1]
	if got := h1.r.MTU(); got != 1440 {
		t.Errorf("MTU() = %d; want 1440 (1500 - 60)", got)
	}
	start := time.Now()
	pairs := b.pingAll(t)
	t.Logf("wireguard: %d pod pairs ping each other (%v)", pairs, time.Since(start))
	assertTxPackets(t, b, h1, h1.cfg.WGIface)
	for _, hn := range b.hosts {
		hn.rec.Take()
		if err := hn.r.Set(hn.cfg); err != nil {
			t.Fatalf("repeated Set: %v", err)
		}
		if got := hn.rec.Take(); len(got) != 0 {
			t.Errorf("host %d: repeated Set mutated the kernel: %q", hn.Index, got)
		}
	}

	// wg(8) sees the device and its peers with handshakes.
	out, err := exec.Command("wg", "show", h1.cfg.WGIface, "latest-handshakes").CombinedOutput()
	if err != nil {
		t.Fatalf("wg show: %v: %s", err, out)
	}
	if lines := strings.Fields(string(out)); len(lines) != 4 || lines[1] == "0" || lines[3] == "0" {
		t.Errorf("wg show %s latest-handshakes = %q; want 2 peers with handshakes", h1.cfg.WGIface, out)
	}
	st := h1.r.Stats()
	s2, ok := st[h2.cfg.ID]
	if !ok || s2.LastHandshake.IsZero() || s2.RxBytes == 0 || s2.TxBytes == 0 || s2.Endpoint != netip.AddrPortFrom(h2.Addr, 51820).String() {
		t.Fatalf("Stats()[h2] = %+v (present %v); want handshake, bytes, endpoint", s2, ok)
	}
	if got := h1.r.PeerTransport(h2.cfg.ID); got != router.TransportWireGuard {
		t.Errorf("PeerTransport(h2) = %q; want wireguard", got)
	}

	// A relaunched control plane (a new Router, as after kill -9: the old
	// one is abandoned without any cleanup) adopts the running datapath
	// without a new handshake, while a pod pings every 10 ms.
	pid := datapathPID(t, h1.cfg.WGIface)
	// Capture h1's underlay link on the switch side meanwhile: pod traffic
	// must cross it only as WireGuard UDP.
	var capOut strings.Builder
	capture := exec.Command("nsenter", "--net="+testutil.NetNSPath(b.Switch), "tcpdump", "-i", h1.SwitchPort(), "-n", "-l", "-p", "ip")
	capture.Stdout = &capOut
	if err := capture.Start(); err != nil {
		t.Fatalf("start tcpdump: %v", err)
	}
	pinger := exec.Command("nsenter", "--net="+testutil.NetNSPath(h1.pods[0].ns), "ping", "-q", "-i", "0.01", "-c", "200", "-W", "1",
		h2.pods[0].addr.String())
	var pingOut strings.Builder
	pinger.Stdout, pinger.Stderr = &pingOut, &pingOut
	if err := pinger.Start(); err != nil {
		t.Fatalf("start ping: %v", err)
	}
	time.Sleep(300 * time.Millisecond) // let the ping run before the relaunch: this is the scenario, not synchronisation
	rec := routertest.NewRecorder(h1.kernel)
	r2, err := router.New(router.Options{Kernel: rec, WireGuard: router.NetNSWGFactory(h1.kernel),
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil)), DatapathCommand: []string{"/proc/self/exe", datapathArg}})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := r2.Set(h1.cfg); err != nil {
		t.Fatalf("relaunched Set: %v", err)
	}
	if got := rec.Take(); len(got) != 0 {
		t.Errorf("relaunched router mutated the kernel: %q", got)
	}
	if got := datapathPID(t, h1.cfg.WGIface); got != pid {
		t.Errorf("datapath pid %d after relaunch; want the running %d", got, pid)
	}
	if got := r2.Stats()[h2.cfg.ID]; !got.LastHandshake.Equal(s2.LastHandshake) {
		t.Errorf("handshake after relaunch %v; want unchanged %v", got.LastHandshake, s2.LastHandshake)
	}
	_ = pinger.Wait()
	_ = capture.Process.Signal(syscall.SIGINT)
	_ = capture.Wait()
	wgPackets := 0
	for _, l := range strings.Split(strings.TrimSpace(capOut.String()), "\n") {
		switch {
		case strings.Contains(l, ".51820: UDP"):
			wgPackets++
		case strings.Contains(l, "10.3") || strings.Contains(l, "10.4") || strings.Contains(l, "ICMP"):
			t.Errorf("pod traffic in clear on the underlay: %s", l)
		}
	}
	if wgPackets < 100 {
		t.Errorf("underlay capture saw %d WireGuard packets; want most of the 200 pings both ways:\n%s", wgPackets, capOut.String())
	}
	t.Logf("underlay capture during the ping: %d WireGuard UDP packets, no pod packet in clear", wgPackets)
	var sent, recv int
	for _, l := range strings.Split(pingOut.String(), "\n") {
		if strings.Contains(l, "packets transmitted") {
			fmt.Sscanf(l, "%d packets transmitted, %d received", &sent, &recv)
		}
	}
	t.Logf("ping every 10 ms across the relaunch: %d sent, %d received", sent, recv)
	if sent != 200 || sent-recv > 0 {
		t.Errorf("ping across the relaunch lost %d of %d:\n%s", sent-recv, sent, pingOut.String())
	}

	// Reset stops the datapath process and removes the device.
	if err := r2.Reset(); err != nil {
		t.Fatalf("Reset: %v", err)
	}
	if _, err := h1.kernel.LinkGet(h1.cfg.WGIface); !errors.Is(err, router.ErrNotFound) {
		t.Errorf("link %s after Reset: %v", h1.cfg.WGIface, err)
	}
	testutil.Eventually(t, 5*time.Second, "the datapath process to stop", func() error {
		// A zombie has stopped: only its exit status waits to be collected.
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && !strings.Contains(string(st), ") Z ") {
			return fmt.Errorf("datapath process %d still running after Reset: %s", pid, st)
		}
		return nil
	})
	if _, err := os.Stat("/var/run/wireguard/" + h1.cfg.WGIface + ".sock"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("UAPI socket after Reset: %v", err)
	}
}

// datapathPID reads the pid file router/wg keeps beside the UAPI socket.
func datapathPID(t *testing.T, iface string) int {
	t.Helper()
	b, err := os.ReadFile("/var/run/wireguard/" + iface + ".pid")
	if err != nil {
		t.Fatalf("datapath pid file: %v", err)
	}
	var pid int
	if _, err := fmt.Sscan(strings.TrimSpace(string(b)), &pid); err != nil {
		t.Fatalf("datapath pid file %q: %v", b, err)
	}
	return pid
}
