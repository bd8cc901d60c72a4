package test

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/test/testbed"
)

// launchTransport launches a mesh over every host of bed with the given
// transport: "wireguard" is the default secure mesh (a secret, no
// --transport flag), the others run --insecure --transport NAME. Every host
// joins through h1.
func launchTransport(t testing.TB, bed *testbed.Bed, transport string) {
	t.Helper()
	if transport == "wireguard" {
		launchSecureMesh(t, bed)
	} else {
		h1 := bed.Hosts[0]
		h1.Launch(t, "--insecure", "--transport", transport)
		for _, h := range bed.Hosts[1:] {
			h.Launch(t, "--insecure", "--transport", transport, h1.Addr.String())
		}
	}
	waitReady(t, bed.Hosts, transport)
}

// relaunchArgs are the flags a host of a mesh made by launchTransport gets
// when it is relaunched with no PEER (its secret is stored in its data dir).
func relaunchArgs(transport string) []string {
	if transport == "wireguard" {
		return nil
	}
	return []string{"--insecure", "--transport", transport}
}

// waitReady waits until every host sees every host alive, its IPAM ring is
// ready, and it reaches each other peer with the wanted transport.
func waitReady(t testing.TB, hosts []*testbed.Host, transport string) {
	t.Helper()
	testutil.Eventually(t, 90*time.Second, fmt.Sprintf("%d peers alive, IPAM ready, transport %s", len(hosts), transport), func() error {
		for _, h := range hosts {
			st, err := h.Status()
			if err != nil {
				return err
			}
			if st.IPAM.Status != "ready" {
				return fmt.Errorf("%s: ipam %q", h.Name, st.IPAM.Status)
			}
			alive := 0
			for _, p := range st.Peers {
				if p.State != "alive" {
					continue
				}
				alive++
				if !p.Self && p.Transport != transport {
					return fmt.Errorf("%s reaches %s over %q", h.Name, p.Name, p.Transport)
				}
			}
			if alive != len(hosts) {
				return fmt.Errorf("%s sees %d alive", h.Name, alive)
			}
		}
		return nil
	})
}

// addPods creates n pods on every host with the real weft-cni.
func addPods(t *testing.T, hosts []*testbed.Host, n int) []*testbed.Pod {
	t.Helper()
	var pods []*testbed.Pod
	for _, h := range hosts {
		for i := 1; i <= n; i++ {
			pods = append(pods, h.AddPod(t, fmt.Sprintf("p%d", i)))
		}
	}
	return pods
}

// pingAll checks that every pod reaches every other pod, polling each pair
// (routes of late peers may still be on their way). It returns the number
// of pairs checked.
func pingAll(t *testing.T, pods []*testbed.Pod, within time.Duration) int {
	t.Helper()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex // guards following
		fails []string
		pairs int
	)
	for _, src := range pods {
		wg.Add(1)
		go func() { // one goroutine per source pod; its pairs run in order
			defer wg.Done()
			for _, dst := range pods {
				if dst == src {
					continue
				}
				err := testutil.Poll(within, func() error { return src.Ping(dst.Addr.Addr()) })
				mu.Lock()
				pairs++
				if err != nil {
					fails = append(fails, fmt.Sprintf("%s (%s on %s) -> %s (%s on %s): %v",
						src.NS, src.Addr.Addr(), src.Host.Name, dst.NS, dst.Addr.Addr(), dst.Host.Name, err))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for _, f := range fails {
		t.Error(f)
	}
	return pairs
}

// TestDatapathPodMatrix is acceptance 1 (with 2 and 3 under wireguard, 3
// under every transport): 3 hosts with 2 pods each, all 30 pairs ping each
// other over each transport, in a bed of their own.
func TestDatapathPodMatrix(t *testing.T) {
	for _, transport := range []string{"wireguard", "vxlan", "direct"} {
		t.Run(transport, func(t *testing.T) {
			bed := testbed.New(t, 3)
			bed.DumpLogsOnFailure(t)
			launchTransport(t, bed, transport)
			pods := addPods(t, bed.Hosts, 2)
			start := time.Now()
			if n := pingAll(t, pods, 60*time.Second); n != 30 {
				t.Errorf("checked %d pairs; want 30", n)
			}
			t.Logf("%s: 30 pairs answered in %v", transport, time.Since(start).Round(time.Millisecond))
			for _, h := range bed.Hosts {
				rs, _ := h.WeftRoutes()
				t.Logf("routes of %s: %+v", h.Name, rs)
			}
			checkInternet(t, bed, pods[0])
			checkServiceDNAT(t, bed, pods)
			if transport == "wireguard" {
				checkEncrypted(t, bed, pods)
				checkWGShow(t, bed)
			}
		})
	}
}

// checkInternet is acceptance 3: a pod reaches a TCP server outside the
// range on the underlay, which sees the pod's host's underlay address.
func checkInternet(t *testing.T, bed *testbed.Bed, pod *testbed.Pod) {
	t.Helper()
	ns, addr := bed.AddInternet()
	l := testbed.ListenTCP(t, ns, addr.String()+":8080")
	got := make(chan string, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- "accept: " + err.Error()
			return
		}
		defer c.Close()
		got <- c.RemoteAddr().String()
		_, _ = c.Write([]byte("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	}()
	out, err := pod.Exec("curl", "-sS", "-m", "10", fmt.Sprintf("http://%s:8080/", addr))
	if err != nil {
		t.Fatalf("pod %s to internet server %s: %v: %s", pod.NS, addr, err, out)
	}
	select {
	case remote := <-got:
		ap, err := netip.ParseAddrPort(remote)
		if err != nil {
			t.Fatalf("internet server: %s", remote)
		}
		if ap.Addr() != pod.Host.Addr {
			t.Errorf("internet server saw %s; want the host's underlay address %s (masquerade)", ap.Addr(), pod.Host.Addr)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("internet server never got a connection")
	}
}

// checkServiceDNAT does what kube-proxy does to a pod's traffic to a
// service address, with the test's own nft table on h1: a ClusterIP DNAT'd
// to a pod on h2 (the reply comes back over the mesh looking pod-to-pod and
// must be translated back by h1's conntrack), and a hairpin (a service
// whose backend is the calling pod itself, masqueraded like kube-proxy
// does). Routed pod veths must carry both; nothing may bypass conntrack for
// pod-to-pod packets.
func checkServiceDNAT(t *testing.T, bed *testbed.Bed, pods []*testbed.Pod) {
	t.Helper()
	h1, client, backend := bed.Hosts[0], pods[0], pods[2] // h1p1 -> service -> h2p1
	self := client.Addr.Addr().String()
	serve := func(ns, addr string) {
		testbed.ServeReply(testbed.ListenTCP(t, ns, addr), []byte("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	}
	serve(backend.NS, backend.Addr.Addr().String()+":8080")
	serve(client.NS, self+":8081")
	for _, cmd := range [][]string{
		{"add", "table", "ip", "svctest"},
		{"add", "chain", "ip", "svctest", "pre", "{ type nat hook prerouting priority dstnat; }"},
		{"add", "rule", "ip", "svctest", "pre", "ip", "daddr", "10.96.0.10", "tcp", "dport", "80", "dnat", "to", backend.Addr.Addr().String() + ":8080"},
		{"add", "rule", "ip", "svctest", "pre", "ip", "daddr", "10.96.0.11", "tcp", "dport", "80", "dnat", "to", self + ":8081"},
		{"add", "chain", "ip", "svctest", "post", "{ type nat hook postrouting priority srcnat; }"},
		{"add", "rule", "ip", "svctest", "post", "ip", "saddr", self, "ip", "daddr", self, "masquerade"},
	} {
		h1.MustRun(t, append([]string{"nft"}, cmd...)...)
	}
	defer h1.Run("nft", "delete", "table", "ip", "svctest")
	for _, svc := range []string{"10.96.0.10", "10.96.0.11"} {
		out, err := client.Exec("curl", "-sS", "-m", "10", "http://"+svc+"/")
		if err != nil || out != "ok" {
			t.Errorf("pod %s to service %s: %v: %q", client.NS, svc, err, out)
		}
	}
}

// checkEncrypted is acceptance 2, first half: during pod pings and a TCP
// transfer between pods on h1 and h2, h2's underlay carries only UDP to or
// from the WireGuard port (and the control plane: gossip on 6783, the
// direct-link probe on 6785, which carries peer IDs): no pod packet in
// clear.
func checkEncrypted(t *testing.T, bed *testbed.Bed, pods []*testbed.Pod) {
	t.Helper()
	h2 := bed.Hosts[1]
	src, dst := pods[0], pods[2] // h1p1 -> h2p1
	pcap := filepath.Join(bed.Dir, "h2-underlay.pcap")
	capDone := make(chan string, 1)
	go func() {
		out, _ := h2.Run("timeout", "-s", "INT", "8", "tcpdump", "-i", "eth0", "-n", "-U", "-s", "128", "-w", pcap)
		capDone <- out
	}()
	testutil.Eventually(t, 20*time.Second, "tcpdump to start writing", func() error {
		if _, err := os.Stat(pcap); err != nil {
			return err
		}
		return nil
	})
	srvDone := make(chan string, 1)
	go func() {
		out, _ := dst.Exec("timeout", "6", "iperf3", "-s", "-1")
		srvDone <- out
	}()
	if out, err := src.Exec("ping", "-c", "20", "-i", "0.05", "-q", dst.Addr.Addr().String()); err != nil {
		t.Errorf("ping during capture: %v: %s", err, out)
	}
	var (
		tcpOK bool
		out   string
		err   error
	)
	_ = testutil.Poll(5*time.Second, func() error { // the server may not listen yet
		out, err = src.Exec("iperf3", "-c", dst.Addr.Addr().String(), "-n", "1M")
		if tcpOK = err == nil && strings.Contains(out, "receiver"); !tcpOK {
			return errors.New("no transfer")
		}
		return nil
	})
	if !tcpOK {
		t.Errorf("no TCP transfer between pods during the capture: %v: %s", err, out)
	}
	if srv := <-srvDone; !tcpOK {
		t.Logf("iperf3 server: %s", srv)
	}
	<-capDone
	read := func(filter string) []string {
		out, err := h2.Run("tcpdump", "-n", "-r", pcap, filter)
		if err != nil {
			t.Fatalf("tcpdump -r %s: %v: %s", filter, err, out)
		}
		var lines []string
		for _, l := range strings.Split(out, "\n") {
			if strings.TrimSpace(l) != "" && !strings.HasPrefix(l, "reading from") {
				lines = append(lines, l)
			}
		}
		return lines
	}
	wgPkts := read("udp port 51820")
	clear := read("ip and not udp port 51820 and not port 6783 and not udp port 6785")
	podRange := read("net 10.32.0.0/12")
	t.Logf("underlay capture on %s: %d WireGuard packets, %d other IPv4 packets (gossip and link probes excluded), %d with pod addresses", h2.Name, len(wgPkts), len(clear), len(podRange))
	if len(wgPkts) < 40 {
		t.Errorf("capture has %d packets to/from the WireGuard port; want the pings and the transfer (>= 40)", len(wgPkts))
	}
	if len(clear) > 0 {
		t.Errorf("IPv4 packets on the underlay that are neither WireGuard nor the control plane:\n%s", strings.Join(first(clear, 20), "\n"))
	}
	if len(podRange) > 0 {
		t.Errorf("pod addresses in clear on the underlay:\n%s", strings.Join(first(podRange, 20), "\n"))
	}
}

func first(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// checkWGShow is acceptance 2, second half: the standard `wg` tool sees
// weft-wg on every host with both other peers and recent handshakes.
func checkWGShow(t *testing.T, bed *testbed.Bed) {
	t.Helper()
	for _, h := range bed.Hosts {
		out := h.MustRun(t, "wg", "show", "weft-wg", "dump")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != len(bed.Hosts) { // the interface line + one per peer
			t.Errorf("wg show weft-wg dump on %s has %d peers; want %d:\n%s", h.Name, len(lines)-1, len(bed.Hosts)-1, out)
			continue
		}
		for _, l := range lines[1:] {
			f := strings.Split(l, "\t")
			// public-key preshared-key endpoint allowed-ips latest-handshake rx tx keepalive
			if len(f) < 8 {
				t.Errorf("wg dump line on %s: %q", h.Name, l)
				continue
			}
			var hs int64
			_, _ = fmt.Sscan(f[4], &hs)
			if age := time.Since(time.Unix(hs, 0)); hs == 0 || age > 3*time.Minute {
				t.Errorf("%s: peer %s (endpoint %s) has no recent handshake (%s)", h.Name, f[0], f[2], f[4])
			}
			if !strings.Contains(f[3], "10.") {
				t.Errorf("%s: peer %s has allowed-ips %q; want its ranges and bridge", h.Name, f[0], f[3])
			}
		}
		t.Logf("wg show weft-wg on %s:\n%s", h.Name, h.MustRun(t, "wg", "show", "weft-wg"))
	}
}

// TestDatapathRestartKeepsPodTraffic is acceptance 4 and 6 for wireguard
// and vxlan: kill -9 of a peer during a 10 ms ping between pods on two
// hosts, and its relaunch, lose less than 1 s of packets; a remote route
// deleted by hand comes back within the resync period; after a stop,
// `weft reset` leaves no weft interface, route or nft table.
func TestDatapathRestartKeepsPodTraffic(t *testing.T) {
	for _, transport := range []string{"wireguard", "vxlan"} {
		t.Run(transport, func(t *testing.T) {
			bed := testbed.New(t, 2)
			bed.DumpLogsOnFailure(t)
			launchTransport(t, bed, transport)
			h1, h2 := bed.Hosts[0], bed.Hosts[1]
			pods := addPods(t, bed.Hosts, 1)
			pingAll(t, pods, 60*time.Second)

			// 1. kill -9 h2's peer 1.5 s into a 6 s ping at 10 ms, relaunch it.
			type result struct {
				out string
				err error
			}
			done := make(chan result, 1)
			go func() {
				out, err := pods[0].Exec("ping", "-c", "600", "-i", "0.01", "-W", "1", "-q", pods[1].Addr.Addr().String())
				done <- result{out, err}
			}()
			time.Sleep(1500 * time.Millisecond) // scenario timing: the crash falls inside the flow
			h2.Kill()
			h2.Launch(t, relaunchArgs(transport)...)
			r := <-done
			sent, recv, err := pingCounts(r.out)
			if err != nil {
				t.Fatalf("ping across the restart: %v: %v\n%s", err, r.err, r.out)
			}
			t.Logf("%s: kill -9 + relaunch during ping -i 0.01: %d sent, %d received, %d lost", transport, sent, recv, sent-recv)
			if sent-recv >= 100 {
				t.Errorf("%s: lost %d of %d packets across kill -9 and relaunch; want < 100 (1 s)", transport, sent-recv, sent)
			}
			waitReady(t, bed.Hosts, transport)
			pingAll(t, pods, 30*time.Second)

			// 2. A remote route deleted by hand comes back within --resync 2s.
			var victim testbed.KernelRoute
			rs, err := h1.WeftRoutes()
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rs {
				if strings.Contains(r.Dst, "/") && (r.Dev == "weft-wg" || r.Dev == "weft-vx") {
					victim = r
					break
				}
			}
			if victim.Dst == "" {
				t.Fatalf("no remote range route on %s: %+v", h1.Name, rs)
			}
			h1.MustRun(t, "ip", "route", "del", victim.Dst, "proto", "157")
			deleted := time.Now()
			testutil.Eventually(t, 20*time.Second, "route "+victim.Dst+" back on "+h1.Name, func() error {
				rs, err := h1.WeftRoutes()
				if err != nil {
					return err
				}
				for _, r := range rs {
					if r == victim {
						return nil
					}
				}
				return fmt.Errorf("no route %s dev %s", victim.Dst, victim.Dev)
			})
			back := time.Since(deleted)
			t.Logf("%s: route %s dev %s deleted by hand came back after %v (resync 2 s)", transport, victim.Dst, victim.Dev, back.Round(time.Millisecond))
			if back > 4*time.Second { // 2 s period plus the polling step and a loaded machine
				t.Errorf("route came back after %v; want within the 2 s resync period", back)
			}

			// 3. weft reset after a graceful stop leaves nothing behind.
			h2.Stop()
			if out, err := h2.Run(h2.ResetArgs()...); err != nil {
				t.Fatalf("weft reset on %s: %v: %s", h2.Name, err, out)
			}
			checkResetClean(t, h2)
		})
	}
}

// pingCounts parses "N packets transmitted, M received" from ping -q.
func pingCounts(out string) (sent, recv int, err error) {
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "packets transmitted") {
			if _, err := fmt.Sscanf(strings.TrimSpace(l), "%d packets transmitted, %d received", &sent, &recv); err != nil {
				return 0, 0, fmt.Errorf("parse %q: %w", l, err)
			}
			return sent, recv, nil
		}
	}
	return 0, 0, fmt.Errorf("no summary in ping output")
}

// checkResetClean asserts acceptance 6 on h: no weft interface, no route
// with weft's protocol, no nft table weft, no WireGuard UAPI socket.
func checkResetClean(t *testing.T, h *testbed.Host) {
	t.Helper()
	links := h.MustRun(t, "ip", "-o", "link", "show")
	for _, name := range []string{"weft", "weft-wg", "weft-vx"} {
		if strings.Contains(links, ": "+name+":") || strings.Contains(links, ": "+name+"@") {
			t.Errorf("after weft reset %s still has interface %s:\n%s", h.Name, name, links)
		}
	}
	if rs, err := h.WeftRoutes(); err != nil || len(rs) > 0 {
		t.Errorf("after weft reset %s still has weft routes: %+v %v", h.Name, rs, err)
	}
	if out := h.MustRun(t, "nft", "list", "tables"); strings.Contains(out, "weft") {
		t.Errorf("after weft reset %s still has nft tables:\n%s", h.Name, out)
	}
	if socks, _ := filepath.Glob(filepath.Join(h.Dir, "wireguard", "*.sock")); len(socks) > 0 {
		t.Errorf("after weft reset %s still has WireGuard UAPI sockets: %v", h.Name, socks)
	}
}

// TestDatapathHostLeaves is acceptance 5 over direct routes (whose gateway
// names the owner's underlay address): a host that stops gracefully, and a
// host killed and reclaimed with `weft rmpeer`, lose every route on the
// others, and each range of the ring (moved by donation at join, by the
// leave, or by the reclaim) routes to its current owner everywhere.
func TestDatapathHostLeaves(t *testing.T) {
	bed := testbed.New(t, 4)
	bed.DumpLogsOnFailure(t)
	launchTransport(t, bed, "direct")
	h1, h2, h3, h4 := bed.Hosts[0], bed.Hosts[1], bed.Hosts[2], bed.Hosts[3]
	pods := addPods(t, bed.Hosts, 1)
	pingAll(t, pods, 60*time.Second)
	waitRingRoutes(t, bed.Hosts, bed.Hosts)

	// 1. Graceful stop of h4: a stop is not a leave. Its range stays its
	// own and routed to it everywhere (its datapath still forwards for its
	// pods) until `weft rmpeer h4` on h2 reclaims it, and then routes to
	// h2 everywhere.
	owned4 := ownedBy(t, h1, h4.Name)
	h4.Stop()
	survivors := bed.Hosts[:3]
	testutil.Eventually(t, 60*time.Second, "h4 stopped on h1", func() error {
		if st, _ := peerState(t, h1, h4.Name); st != "stopped" && st != "dead" {
			return fmt.Errorf("h1 sees h4 %q; want stopped (or dead)", st)
		}
		return nil
	})
	waitRingRoutes(t, survivors, bed.Hosts)
	pingAll(t, pods, 30*time.Second)
	reclaim(t, h2, h4, survivors)
	waitNoRoutesVia(t, survivors, h4)
	waitRingRoutes(t, survivors, bed.Hosts)
	checkMovedTo(t, h1, owned4, h2)
	checkMovedTo(t, h3, owned4, h2)
	pingAll(t, pods[:3], 30*time.Second)

	// 2. kill -9 of h3, then `weft rmpeer h3` on h1: its ranges route to h1.
	owned3 := ownedBy(t, h1, h3.Name)
	h3.Kill()
	survivors = bed.Hosts[:2]
	// Every survivor: the reclaim's acceptors refuse while h3 is alive to
	// them (each allocator learns it from its own sync loop).
	testutil.Eventually(t, 60*time.Second, "h3 dead on h1 and h2", func() error {
		for _, h := range survivors {
			if st, _ := peerState(t, h, h3.Name); st != "dead" {
				return fmt.Errorf("%s sees h3 %q", h.Name, st)
			}
		}
		return nil
	})
	reclaim(t, h1, h3, survivors)
	waitNoRoutesVia(t, survivors, h3)
	waitRingRoutes(t, survivors, bed.Hosts)
	checkMovedTo(t, h2, owned3, h1)
	pingAll(t, pods[:2], 30*time.Second)
}

// reclaim runs `weft rmpeer gone` on h and waits until every host of
// hosts sees none of gone's ranges in its ring.
func reclaim(t *testing.T, h, gone *testbed.Host, hosts []*testbed.Host) {
	t.Helper()
	out, stderr, err := h.Weft("rmpeer", gone.Name)
	if err != nil {
		t.Fatalf("weft rmpeer %s on %s: %v: %s %s", gone.Name, h.Name, err, out, stderr)
	}
	t.Logf("weft rmpeer %s on %s: %s", gone.Name, h.Name, strings.TrimSpace(out))
	testutil.Eventually(t, 60*time.Second, gone.Name+"'s ranges reclaimed everywhere", func() error {
		for _, x := range hosts {
			rs, err := ring(x)
			if err != nil {
				return err
			}
			for _, r := range rs {
				if r.owner == gone.Name {
					return fmt.Errorf("%s: %s-%s still owned by %s", x.Name, r.start, r.end, gone.Name)
				}
			}
		}
		return nil
	})
}

// checkMovedTo checks that h routes the ranges rs (once another peer's)
// via owner's underlay address.
func checkMovedTo(t *testing.T, h *testbed.Host, rs []ringRange, owner *testbed.Host) {
	t.Helper()
	// h learns of the move by gossip and its router applies it after a
	// debounce: poll (waitRingRoutes checks only the ends of merged runs).
	testutil.Eventually(t, 30*time.Second, "reclaimed ranges routed to "+owner.Name+" on "+h.Name, func() error {
		for _, r := range rs {
			for _, a := range []netip.Addr{r.start.Next(), r.end.Prev()} { // neither is the range's network or broadcast
				rt, err := h.RouteGet(a)
				if err != nil {
					return err
				}
				if rt.Gateway != owner.Addr.String() {
					return fmt.Errorf("%s routes %s (reclaimed by %s) via %q dev %s; want via %s", h.Name, a, owner.Name, rt.Gateway, rt.Dev, owner.Addr)
				}
			}
		}
		return nil
	})
}

type ringRange struct {
	start, end netip.Addr
	owner      string // owner's name
}

// ownedBy returns the ranges of the ring, as h sees it, owned by name.
func ownedBy(t *testing.T, h *testbed.Host, name string) []ringRange {
	t.Helper()
	rs, err := ring(h)
	if err != nil {
		t.Fatal(err)
	}
	var out []ringRange
	for _, r := range rs {
		if r.owner == name {
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s owns nothing in %s's ring: %+v", name, h.Name, rs)
	}
	return out
}

func ring(h *testbed.Host) ([]ringRange, error) {
	st, err := h.Status()
	if err != nil {
		return nil, err
	}
	var out []ringRange
	for _, r := range st.IPAM.Ranges {
		s, err1 := netip.ParseAddr(r.Start)
		e, err2 := netip.ParseAddr(r.End)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("ring of %s: range %+v", h.Name, r)
		}
		out = append(out, ringRange{s, e, r.OwnerName})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s has an empty ring", h.Name)
	}
	return out, nil
}

// waitRingRoutes waits until every host of hosts routes the first and last
// address of every range of its ring (but the network and broadcast
// addresses of the whole range, which IPAM never hands out and the kernel
// treats as the bridge subnet's) to the range's owner: the bridge when
// it owns the range itself, else the owner's underlay address (direct),
// whether or not the owner's peer runs: routes follow the ring, not
// liveness. hosts are the hosts checked; all lists every host ever in the
// bed.
func waitRingRoutes(t *testing.T, hosts, all []*testbed.Host) {
	t.Helper()
	byName := map[string]*testbed.Host{}
	for _, h := range all {
		byName[h.Name] = h
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, h := range hosts {
				rs, _ := ring(h)
				routes, _ := h.WeftRoutes()
				t.Logf("%s: ring %v\nroutes %+v", h.Name, rs, routes)
			}
		}
	})
	testutil.Eventually(t, 60*time.Second, "every range routed to its owner", func() error {
		for _, h := range hosts {
			rs, err := ring(h)
			if err != nil {
				return err
			}
			lo, hi := rs[0].start, rs[len(rs)-1].end // network and broadcast: never pods
			for _, r := range rs {
				if byName[r.owner] == nil {
					return fmt.Errorf("%s: range %s-%s owned by %q, not a host of the bed", h.Name, r.start, r.end, r.owner)
				}
				for _, a := range []netip.Addr{r.start, r.end} {
					if a == lo {
						a = a.Next()
					} else if a == hi {
						a = a.Prev()
					}
					rt, err := h.RouteGet(a)
					if err != nil {
						return err
					}
					if r.owner == h.Name {
						// weft: unallocated; lo: its bridge address; wf*: a pod's veth
						if rt.Dev != "weft" && rt.Dev != "lo" && !strings.HasPrefix(rt.Dev, "wf") {
							return fmt.Errorf("%s: own address %s goes to %s via %q", h.Name, a, rt.Dev, rt.Gateway)
						}
					} else if rt.Gateway != byName[r.owner].Addr.String() || rt.Dev != "eth0" {
						return fmt.Errorf("%s: %s (owner %s) goes via %q dev %s; want via %s", h.Name, a, r.owner, rt.Gateway, rt.Dev, byName[r.owner].Addr)
					}
				}
			}
		}
		return nil
	})
}

// waitNoRoutesVia waits until no host of hosts has a weft route via gone.
func waitNoRoutesVia(t *testing.T, hosts []*testbed.Host, gone *testbed.Host) {
	t.Helper()
	start := time.Now()
	testutil.Eventually(t, 60*time.Second, "no route via "+gone.Name, func() error {
		for _, h := range hosts {
			rs, err := h.WeftRoutes()
			if err != nil {
				return err
			}
			for _, r := range rs {
				if r.Gateway == gone.Addr.String() {
					return fmt.Errorf("%s: route %s via %s (%s)", h.Name, r.Dst, r.Gateway, gone.Name)
				}
			}
		}
		return nil
	})
	t.Logf("routes via %s gone from %d hosts after %v", gone.Name, len(hosts), time.Since(start).Round(time.Millisecond))
}
