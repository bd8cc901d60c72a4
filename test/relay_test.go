package test

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/test/testbed"
)

// Issue 18: a self-healing mesh. Two peers that cannot reach each other
// directly (nftables drops in the host namespaces, testbed/block.go) talk
// through a peer that reaches both, and go back to direct when the link
// heals.

// via is what h's status says of the relay towards the peer named name
// ("" = direct), and the status problems.
func via(h *testbed.Host, name string) (string, []string, error) {
	st, err := h.Status()
	if err != nil {
		return "", nil, err
	}
	for _, p := range st.Peers {
		if p.Name == name {
			return p.Via, st.Problems, nil
		}
	}
	return "", nil, fmt.Errorf("%s does not list %s", h.Name, name)
}

// waitVia waits until h reaches the peer named name through want ("" =
// directly) and returns how long that took.
func waitVia(t *testing.T, h *testbed.Host, name, want string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	testutil.Eventually(t, within, fmt.Sprintf("%s to reach %s via %q", h.Name, name, want), func() error {
		got, _, err := via(h, name)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("via %q", got)
		}
		return nil
	})
	return time.Since(start)
}

// pingTTL sends one ping and returns the TTL of the reply.
func pingTTL(src *testbed.Pod, dst netip.Addr) (int, error) {
	out, err := src.Exec("ping", "-c", "1", "-W", "1", dst.String())
	if err != nil {
		return 0, fmt.Errorf("ping %s from %s on %s: %v: %s", dst, src.NS, src.Host.Name, err, out)
	}
	m := regexp.MustCompile(`ttl=(\d+)`).FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("ping %s: no ttl in %q", dst, out)
	}
	return strconv.Atoi(m[1])
}

// waitTalk polls single pings both ways between a and b until both are
// answered, and returns how long that took.
func waitTalk(t *testing.T, a, b *testbed.Pod, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	testutil.Eventually(t, within, fmt.Sprintf("pods on %s and %s to talk", a.Host.Name, b.Host.Name), func() error {
		if _, err := pingTTL(a, b.Addr.Addr()); err != nil {
			return err
		}
		_, err := pingTTL(b, a.Addr.Addr())
		return err
	})
	return time.Since(start)
}

func TestRelay(t *testing.T) {
	for _, transport := range []string{"wireguard", "vxlan"} {
		t.Run(transport, func(t *testing.T) { testRelay(t, transport) })
	}
}

// testRelay is acceptance 1 (wireguard) and 2 (vxlan), with 3 (a one-way
// block) under wireguard.
func testRelay(t *testing.T, transport string) {
	bed := testbed.New(t, 3)
	bed.DumpLogsOnFailure(t)
	launchTransport(t, bed, transport)
	h1, h2, h3 := bed.Hosts[0], bed.Hosts[1], bed.Hosts[2]
	p1, p3 := h1.AddPod(t, "p1"), h3.AddPod(t, "p1")
	waitTalk(t, p1, p3, 60*time.Second)

	h1.Block(h3)
	t.Logf("%s: blocked h1-h3 both ways; pods talk again after %v", transport, waitTalk(t, p1, p3, 60*time.Second).Round(time.Millisecond))
	waitVia(t, h1, "h3", "h2", 30*time.Second)
	waitVia(t, h3, "h1", "h2", 30*time.Second)
	_, problems, err := via(h1, "h3")
	if err != nil {
		t.Fatal(err)
	}
	if want := "h1 cannot reach h3 directly; relaying through h2"; !strings.Contains(strings.Join(problems, "\n"), want) {
		t.Errorf("h1 status problems %q; want %q", problems, want)
	}
	out, _, err := h1.Weft("status", "peers")
	if err != nil || !regexp.MustCompile(`(?m)^h3 .* via h2 `).MatchString(out) {
		t.Errorf("weft status peers on h1 (err %v) does not show h3 via h2:\n%s", err, out)
	}
	if _, ttlErr := pingTTL(p1, p3.Addr.Addr()); ttlErr != nil {
		t.Error(ttlErr)
	}
	if transport == "wireguard" {
		checkOnlyWireGuard(t, bed, h1, h2, p1, p3)
	}

	h1.Unblock(h3)
	d1 := waitVia(t, h1, "h3", "", 60*time.Second)
	waitVia(t, h3, "h1", "", 60*time.Second)
	t.Logf("%s: unblocked; h1 routes to h3 directly again after %v", transport, d1.Round(time.Millisecond))
	waitTalk(t, p1, p3, 30*time.Second)
	if transport == "wireguard" {
		waitDirectWireGuard(t, h1, h3, p1, p3)
	}

	if transport != "wireguard" {
		return
	}
	// Acceptance 3: h1 → h3 dropped, h3 → h1 passes.
	h1.BlockTo(h3)
	t.Logf("%s: one-way block h1→h3; pods talk again after %v", transport, waitTalk(t, p1, p3, 60*time.Second).Round(time.Millisecond))
	waitVia(t, h1, "h3", "h2", 30*time.Second)
	waitVia(t, h3, "h1", "h2", 30*time.Second)
	h1.UnblockTo(h3)
	waitVia(t, h1, "h3", "", 60*time.Second)
	waitVia(t, h3, "h1", "", 60*time.Second)
	waitTalk(t, p1, p3, 30*time.Second)
}

// checkOnlyWireGuard captures the link between h1 and h2 at the switch
// while pods on h1 and h3 ping each other through h2: every packet is
// WireGuard (UDP 51820) or the control plane (gossip 6783, the probe 6785),
// none shows a pod address, and the pings are there as WireGuard packets.
func checkOnlyWireGuard(t *testing.T, bed *testbed.Bed, h1, h2 *testbed.Host, p1, p3 *testbed.Pod) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", "--net="+testutil.NetNSPath(bed.Switch), "--",
		"tcpdump", "-n", "-l", "-i", h1.SwitchPort(), "-c", "400", "host", h1.Addr.String(), "and", "host", h2.Addr.String())
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("tcpdump: %v", err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "listening on") {
				close(ready)
				for sc.Scan() {
				}
				return
			}
		}
	}()
	select {
	case <-ready:
	case <-ctx.Done():
		t.Fatal("tcpdump did not start")
	}
	lines := make(chan string, 1000)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	if out, err := p1.Exec("ping", "-c", "20", "-i", "0.05", "-W", "1", "-q", p3.Addr.Addr().String()); err != nil {
		t.Errorf("ping through the relay during the capture: %v: %s", err, out)
	}
	cancel()
	wgPackets := 0
	for l := range lines {
		switch {
		case strings.Contains(l, p1.Addr.Addr().String()+" ") || strings.Contains(l, p3.Addr.Addr().String()+" ") ||
			strings.Contains(l, "ICMP"):
			t.Errorf("pod traffic in clear between h1 and h2: %s", l)
		case strings.Contains(l, ".51820 >") && strings.Contains(l, "UDP"):
			wgPackets++
		case strings.Contains(l, ".6783") || strings.Contains(l, ".6785"):
		default:
			t.Errorf("unexpected packet between h1 and h2: %s", l)
		}
	}
	// 20 requests go h1 → h2 and 20 replies come back; the capture ends
	// with the ping, so the last few may miss it.
	if wgPackets < 20 {
		t.Errorf("captured %d WireGuard packets between h1 and h2 for 20 relayed pings; want at least 20", wgPackets)
	}
	t.Logf("capture h1-h2: %d WireGuard packets, no pod traffic in clear", wgPackets)
}

// waitDirectWireGuard waits until h1's WireGuard peer for h3 (found by
// its endpoint, h3's underlay address) carries the pods' traffic again:
// AllowedIPs back, a live session (a handshake within WireGuard's 180 s
// session lifetime: one from before the block may still be valid), and
// its received bytes growing while the pods ping.
func waitDirectWireGuard(t *testing.T, h1, h3 *testbed.Host, p1, p3 *testbed.Pod) {
	t.Helper()
	ep := h3.Addr.String() + ":51820"
	peerRx := func() (allowed string, hs, rx int64, err error) {
		out, err := h1.Run("wg", "show", "weft-wg", "dump")
		if err != nil {
			return "", 0, 0, fmt.Errorf("wg show: %v: %s", err, out)
		}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
			f := strings.Split(l, "\t") // key psk endpoint allowed-ips handshake rx tx keepalive
			if len(f) >= 8 && f[2] == ep {
				hs, _ = strconv.ParseInt(f[4], 10, 64)
				rx, _ = strconv.ParseInt(f[5], 10, 64)
				return f[3], hs, rx, nil
			}
		}
		return "", 0, 0, fmt.Errorf("no WireGuard peer with endpoint %s:\n%s", ep, out)
	}
	testutil.Eventually(t, 60*time.Second, "h1's WireGuard peer h3 to carry the pods' traffic directly", func() error {
		allowed, hs, rx0, err := peerRx()
		if err != nil {
			return err
		}
		covers := false
		for _, a := range strings.Split(allowed, ",") {
			if pf, err := netip.ParsePrefix(a); err == nil && pf.Contains(p3.Addr.Addr()) {
				covers = true
			}
		}
		if !covers {
			return fmt.Errorf("AllowedIPs of h3 (%s) do not cover its pod %s", allowed, p3.Addr.Addr())
		}
		if age := time.Since(time.Unix(hs, 0)); hs == 0 || age > 180*time.Second {
			return fmt.Errorf("no live session with h3 (last handshake %v ago)", age)
		}
		if out, err := p1.Exec("ping", "-c", "5", "-i", "0.05", "-W", "1", "-q", p3.Addr.Addr().String()); err != nil {
			return fmt.Errorf("ping: %v: %s", err, out)
		}
		_, _, rx1, err := peerRx()
		if err != nil {
			return err
		}
		if rx1 <= rx0 {
			return fmt.Errorf("nothing received from h3 directly while pinging (rx %d → %d)", rx0, rx1)
		}
		return nil
	})
}

// lineBlocks cuts every link of hosts but those between neighbours.
func lineBlocks(hosts []*testbed.Host) {
	for i := range hosts {
		for j := i + 2; j < len(hosts); j++ {
			hosts[i].Block(hosts[j])
		}
	}
}

// TestRelayLine is acceptance 4: 5 hosts in a line, each reaching only
// its neighbours. Every pod reaches every other, and the TTL of each reply
// shows the path is the line itself: one hop per host on the way, so no
// loop and no detour.
func TestRelayLine(t *testing.T) {
	bed := testbed.New(t, 5)
	bed.DumpLogsOnFailure(t)
	launchTransport(t, bed, "wireguard")
	var pods []*testbed.Pod
	for _, h := range bed.Hosts {
		pods = append(pods, h.AddPod(t, "p1"))
	}
	lineBlocks(bed.Hosts)
	start := time.Now()
	for i, src := range pods {
		for j, dst := range pods {
			if i == j {
				continue
			}
			hosts := max(i, j) - min(i, j) + 1 // routers on the way back: the replier's host, relays, ours
			want := 64 - hosts
			testutil.Eventually(t, 90*time.Second, fmt.Sprintf("h%d pod → h%d pod, reply TTL %d", i+1, j+1, want), func() error {
				ttl, err := pingTTL(src, dst.Addr.Addr())
				if err != nil {
					return err
				}
				if ttl != want {
					return fmt.Errorf("reply TTL %d; want %d (%d routers)", ttl, want, hosts)
				}
				return nil
			})
		}
	}
	t.Logf("line of 5: all 20 pairs along the line after %v", time.Since(start).Round(time.Millisecond))
	if v, _, err := via(bed.Hosts[0], "h5"); err != nil || v != "h2" {
		t.Errorf("h1 reaches h5 via %q (%v); want h2", v, err)
	}
}

// TestRelayFailover is acceptance 5: h1 and h3 cannot reach each other,
// h2 and h4 both relay; the relay in use dies (kill -9, and its host drops
// off the network, since a killed control plane leaves the datapath
// forwarding) and the traffic moves to the other.
func TestRelayFailover(t *testing.T) {
	bed := testbed.New(t, 4)
	bed.DumpLogsOnFailure(t)
	launchTransport(t, bed, "wireguard")
	h1, h3 := bed.Hosts[0], bed.Hosts[2]
	p1, p3 := h1.AddPod(t, "p1"), h3.AddPod(t, "p1")
	h1.Block(h3)
	waitTalk(t, p1, p3, 60*time.Second)
	var relay string
	testutil.Eventually(t, 30*time.Second, "h1 relays to h3", func() error {
		v, _, err := via(h1, "h3")
		if err != nil || v == "" {
			return fmt.Errorf("via %q: %v", v, err)
		}
		relay = v
		return nil
	})
	waitVia(t, h3, "h1", relay, 30*time.Second)
	dead, other := bed.Hosts[1], bed.Hosts[3]
	if relay == "h4" {
		dead, other = other, dead
	}
	dead.Kill()
	dead.Cut()
	took := waitTalk(t, p1, p3, 60*time.Second)
	t.Logf("relay %s killed; pods talk again through %s after %v", dead.Name, other.Name, took.Round(time.Millisecond))
	waitVia(t, h1, "h3", other.Name, 30*time.Second)
	waitVia(t, h3, "h1", other.Name, 30*time.Second)
}
