package router_test

// Pod-to-pod datapath benchmark (root, and only with WEFT_ROUTER_BENCH=1):
// every configuration is built at once in its own namespaces, then measured
// in interleaved rounds so that the machine's noise hits all alike:
//
//	raw-hostgw   pods routed by hand-made host-gw routes (limits.sh p2p-hostgw)
//	weft-direct  the same hosts run by the Router, transport direct
//	raw-vxlan    hand-made kernel VXLAN between the hosts (limits.sh p2p-vxlan)
//	weft-vxlan   the Router, transport vxlan
//	weft-wg      the Router, transport wireguard (router/wg userspace datapath)
//
//	sudo WEFT_ROUTER_BENCH=1 go test -run TestBenchPodToPod -v -timeout 30m ./router/

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/router"
)

type benchPath struct {
	name     string
	src, dst string // pod namespaces
	dstAddr  netip.Addr
	udpLen   int // UDP payload that fits the pod MTU
}

type benchResult struct{ tcp1, tcp4, udp, udpLoss, rtt float64 }

func TestBenchPodToPod(t *testing.T) {
	if os.Getenv("WEFT_ROUTER_BENCH") == "" {
		t.Skip("set WEFT_ROUTER_BENCH=1 to run the datapath benchmark")
	}
	testutil.Root(t, "iperf3")
	dur := envInt("WEFT_BENCH_DURATION", 5)
	rounds := envInt("WEFT_BENCH_ROUNDS", 3)

	var paths []benchPath
	paths = append(paths, rawPath(t, "raw-hostgw", false))
	paths = append(paths, weftPath(t, "weft-direct", router.TransportDirect))
	paths = append(paths, weftPath(t, "direct-nomasq", router.TransportDirect)) // without the nat hook: no conntrack
	paths = append(paths, rawPath(t, "raw-vxlan", true))
	paths = append(paths, weftPath(t, "weft-vxlan", router.TransportVXLAN))
	paths = append(paths, weftPath(t, "weft-wg", router.TransportWireGuard))

	results := map[string][]benchResult{}
	for round := range rounds {
		for _, p := range paths {
			res := measure(t, p, dur)
			t.Logf("round %d %-12s tcp1 %.2f tcp4 %.2f Gbit/s udp@1G %.3f Gbit/s loss %.2f%% rtt %.3f ms",
				round+1, p.name, res.tcp1, res.tcp4, res.udp, res.udpLoss, res.rtt)
			results[p.name] = append(results[p.name], res)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-12s | %-22s | %-22s | %-28s | %s\n", "path", "TCP x1 Gbit/s", "TCP x4 Gbit/s", "UDP 1G offered: Gbit/s (loss)", "RTT ms")
	for _, p := range paths {
		rs := results[p.name]
		f := func(get func(benchResult) float64) string {
			v := make([]float64, len(rs))
			for i, r := range rs {
				v[i] = get(r)
			}
			slices.Sort(v)
			return fmt.Sprintf("%.2f [%.2f-%.2f]", v[len(v)/2], v[0], v[len(v)-1])
		}
		fmt.Fprintf(&b, "%-12s | %-22s | %-22s | %-17s (%5.2f%%) | %.3f\n", p.name,
			f(func(r benchResult) float64 { return r.tcp1 }), f(func(r benchResult) float64 { return r.tcp4 }),
			f(func(r benchResult) float64 { return r.udp }), median(rs, func(r benchResult) float64 { return r.udpLoss }),
			median(rs, func(r benchResult) float64 { return r.rtt }))
	}
	ratio := func(a, base string, get func(benchResult) float64) float64 {
		return median(results[a], get) / median(results[base], get)
	}
	for _, pair := range [][2]string{{"weft-direct", "raw-hostgw"}, {"weft-vxlan", "raw-vxlan"}} {
		fmt.Fprintf(&b, "%s / %s: TCP x1 %.2f, TCP x4 %.2f, UDP %.2f, RTT %.2f\n", pair[0], pair[1],
			ratio(pair[0], pair[1], func(r benchResult) float64 { return r.tcp1 }),
			ratio(pair[0], pair[1], func(r benchResult) float64 { return r.tcp4 }),
			ratio(pair[0], pair[1], func(r benchResult) float64 { return r.udp }),
			ratio(pair[0], pair[1], func(r benchResult) float64 { return r.rtt }))
	}
	for _, l := range strings.Split(b.String(), "\n") {
		t.Log("| " + l)
	}
}

func median(rs []benchResult, get func(benchResult) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = get(r)
	}
	slices.Sort(v)
	return v[len(v)/2]
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// nsRun runs argv in namespace ns and fails the test on error.
func nsRun(t *testing.T, ns string, argv ...string) string {
	t.Helper()
	out, err := exec.Command("nsenter", append([]string{"--net=" + testutil.NetNSPath(ns)}, argv...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %v: %s", ns, argv, err, out)
	}
	return string(out)
}

// weftPath builds two hosts run by Routers with one pod each.
func weftPath(t *testing.T, name, transport string) benchPath {
	b := newBed(t, 2, transport, router.Options{})
	if strings.HasSuffix(name, "-nomasq") {
		for _, hn := range b.hosts {
			hn.cfg.Masquerade = false
			if err := hn.r.Set(hn.cfg); err != nil {
				t.Fatalf("Set: %v", err)
			}
		}
	}
	src := b.addPod(b.hosts[0], netip.MustParseAddr("10.32.0.5"))
	dst := b.addPod(b.hosts[1], netip.MustParseAddr("10.36.0.5"))
	testutil.Eventually(t, 10*time.Second, "the pods to ping each other", func() error { return ping(src.ns, dst.addr) })
	return benchPath{name: name, src: src.ns, dst: dst.ns, dstAddr: dst.addr, udpLen: b.hosts[0].r.MTU() - 28}
}

// rawPath builds two hosts with hand-made pod routing, as limits.sh does:
// pod 10.244.<i>.2/24 behind host veth 10.244.<i>.1, host-gw routes via the
// underlay, or via a kernel VXLAN device (VNI 42, MTU 1450) when vxlan.
func rawPath(t *testing.T, name string, vxlan bool) benchPath {
	b := newUnderlay(t, 2, 0)
	mtu := 1500
	if vxlan {
		mtu = 1450
	}
	for i, hn := range b.hosts {
		other := b.hosts[1-i]
		nsRun(t, hn.NS, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
		p := b.AddNamespace(fmt.Sprintf("h%dp1", hn.Index))
		b.veth(hn.NS, "rp", p, "eth0", "", 1500)
		nsRun(t, hn.NS, "ip", "addr", "add", fmt.Sprintf("10.244.%d.1/24", hn.Index), "dev", "rp")
		nsRun(t, p, "ip", "addr", "add", fmt.Sprintf("10.244.%d.2/24", hn.Index), "dev", "eth0")
		nsRun(t, p, "ip", "link", "set", "eth0", "up")
		nsRun(t, p, "ip", "route", "add", "default", "via", fmt.Sprintf("10.244.%d.1", hn.Index), "mtu", strconv.Itoa(mtu))
		remote := fmt.Sprintf("10.244.%d.0/24", other.Index)
		if vxlan {
			nsRun(t, hn.NS, "ip", "link", "add", "rvx", "type", "vxlan", "id", "42", "dstport", "4789",
				"remote", other.Addr.String(), "local", hn.Addr.String(), "dev", "eth0")
			nsRun(t, hn.NS, "ip", "addr", "add", fmt.Sprintf("10.100.0.%d/24", hn.Index), "dev", "rvx")
			nsRun(t, hn.NS, "ip", "link", "set", "rvx", "mtu", "1450", "up")
			nsRun(t, hn.NS, "ip", "route", "add", remote, "via", fmt.Sprintf("10.100.0.%d", other.Index), "dev", "rvx")
		} else {
			nsRun(t, hn.NS, "ip", "route", "add", remote, "via", other.Addr.String(), "dev", "eth0")
		}
	}
	src, dst := b.Prefix+"-h1p1", b.Prefix+"-h2p1"
	dstAddr := netip.MustParseAddr("10.244.2.2")
	testutil.Eventually(t, 10*time.Second, "the pods to ping each other", func() error { return ping(src, dstAddr) })
	return benchPath{name: name, src: src, dst: dst, dstAddr: dstAddr, udpLen: mtu - 28}
}

// measure runs iperf3 TCP x1, TCP x4, UDP at 1 Gbit/s offered and ping.
func measure(t *testing.T, p benchPath, dur int) benchResult {
	t.Helper()
	srv := exec.Command("nsenter", "--net="+testutil.NetNSPath(p.dst), "iperf3", "-s", "-p", "5201")
	if err := srv.Start(); err != nil {
		t.Fatalf("iperf3 server: %v", err)
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	testutil.Eventually(t, 5*time.Second, "the iperf3 server to listen", func() error {
		return testutil.InNetNS(testutil.NetNSPath(p.src), func() error {
			c, err := net.DialTimeout("tcp4", netip.AddrPortFrom(p.dstAddr, 5201).String(), time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
	})
	time.Sleep(200 * time.Millisecond) // iperf3 rejects a test that starts while it closes the probe connection
	iperf := func(args ...string) map[string]any {
		argv := append([]string{"--net=" + testutil.NetNSPath(p.src), "iperf3", "-c", p.dstAddr.String(), "-p", "5201",
			"-t", strconv.Itoa(dur), "-J"}, args...)
		out, err := exec.Command("nsenter", argv...).Output()
		var js map[string]any
		if jerr := json.Unmarshal(out, &js); jerr != nil || err != nil {
			t.Fatalf("%s iperf3 %v: %v %v: %s", p.name, args, err, jerr, out)
		}
		return js["end"].(map[string]any)
	}
	num := func(m map[string]any, keys ...string) float64 {
		var v any = m
		for _, k := range keys {
			mm, ok := v.(map[string]any)
			if !ok {
				return 0
			}
			v = mm[k]
		}
		f, _ := v.(float64)
		return f
	}
	var r benchResult
	r.tcp1 = num(iperf(), "sum_received", "bits_per_second") / 1e9
	r.tcp4 = num(iperf("-P", "4"), "sum_received", "bits_per_second") / 1e9
	u := iperf("-u", "-b", "1G", "-w", "4M", "-l", strconv.Itoa(p.udpLen))
	if _, ok := u["sum_received"]; ok {
		r.udp, r.udpLoss = num(u, "sum_received", "bits_per_second")/1e9, num(u, "sum_received", "lost_percent")
	} else {
		r.udp, r.udpLoss = num(u, "sum", "bits_per_second")/1e9, num(u, "sum", "lost_percent")
	}
	out := nsRun(t, p.src, "ping", "-q", "-c", "200", "-i", "0.01", p.dstAddr.String())
	if i := strings.Index(out, "= "); i >= 0 {
		parts := strings.Split(out[i+2:], "/")
		if len(parts) > 1 {
			r.rtt, _ = strconv.ParseFloat(parts[1], 64)
		}
	}
	return r
}
