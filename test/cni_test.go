package test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/weftmesh/weft/api/client"
	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/test/testbed"
)

// ipamOf returns `weft status ipam --json` of h.
func ipamOf(h *testbed.Host) (client.IPAMStatus, error) {
	out, stderr, err := h.Weft("status", "ipam", "--json")
	if err != nil {
		return client.IPAMStatus{}, fmt.Errorf("weft status ipam on %s: %v: %s", h.Name, err, stderr)
	}
	var st client.IPAMStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return st, fmt.Errorf("decode ipam status of %s: %v: %s", h.Name, err, out)
	}
	return st, nil
}

// waitIPAMReady waits until every host's IPAM is ready and its bridge has
// its address, and returns each host's allocated count then.
func waitIPAMReady(t *testing.T, hosts []*testbed.Host) []int64 {
	t.Helper()
	counts := make([]int64, len(hosts))
	testutil.Eventually(t, 60*time.Second, "IPAM ready with a bridge address everywhere", func() error {
		for i, h := range hosts {
			st, err := ipamOf(h)
			if err != nil {
				return err
			}
			if st.Status != "ready" || st.Allocated < 1 {
				return fmt.Errorf("%s: ipam %q, %d allocated", h.Name, st.Status, st.Allocated)
			}
			counts[i] = st.Allocated
		}
		return nil
	})
	for _, h := range hosts {
		bridgeOf(t, h)
	}
	return counts
}

// wantAllocated waits until h's allocated count is want.
func wantAllocated(t *testing.T, h *testbed.Host, want int64, what string) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, what, func() error {
		st, err := ipamOf(h)
		if err != nil {
			return err
		}
		if st.Allocated != want {
			return fmt.Errorf("%s has %d allocated; want %d", h.Name, st.Allocated, want)
		}
		return nil
	})
}

// podsOn returns h's local CNI attachments by container ID.
func podsOn(h *testbed.Host) (map[string]client.Pod, error) {
	st, err := h.Status()
	if err != nil {
		return nil, err
	}
	m := map[string]client.Pod{}
	for _, p := range st.Pods {
		m[p.ContainerID] = p
	}
	return m, nil
}

// wantLinks waits until h's links are exactly base (no veth left behind).
func wantLinks(t *testing.T, h *testbed.Host, base []string, what string) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, what, func() error {
		links, err := h.Veths()
		if err != nil {
			return err
		}
		slices.Sort(links)
		if d := cmp.Diff(base, links); d != "" {
			return fmt.Errorf("links of %s (-before +now):\n%s", h.Name, d)
		}
		return nil
	})
}

func sortedLinks(t *testing.T, h *testbed.Host) []string {
	t.Helper()
	links, err := h.Veths()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(links)
	return links
}

// cniResult is the part of a CNI 1.0.0 result the tests read.
type cniResult struct {
	CNIVersion string `json:"cniVersion"`
	Interfaces []struct {
		Name    string `json:"name"`
		Sandbox string `json:"sandbox"`
	} `json:"interfaces"`
	IPs []struct {
		Address string `json:"address"`
		Gateway string `json:"gateway"`
	} `json:"ips"`
	DNS struct {
		Nameservers []string `json:"nameservers"`
	} `json:"dns"`
}

func (r cniResult) addr() (netip.Prefix, netip.Addr, error) {
	if len(r.IPs) == 0 {
		return netip.Prefix{}, netip.Addr{}, fmt.Errorf("result has no ips")
	}
	p, err := netip.ParsePrefix(r.IPs[0].Address)
	if err != nil {
		return p, netip.Addr{}, err
	}
	gw, err := netip.ParseAddr(r.IPs[0].Gateway)
	return p, gw, err
}

// TestCNIToolAddCheckDel covers issue 5's acceptance 2: the reference
// cnitool (libcni, as a runtime uses it) adds, checks and deletes a
// namespace with the conflist `weft setup-cni` wrote, weft-cni chained
// with the real portmap plugin.
func TestCNIToolAddCheckDel(t *testing.T) {
	bed := testbed.New(t, 1)
	bed.DumpLogsOnFailure(t)
	h := bed.Hosts[0]
	h.Launch(t, "--insecure")
	base := waitIPAMReady(t, bed.Hosts)[0]
	binDir, confDir := h.SetupCNI(t)
	conf, err := os.ReadFile(filepath.Join(confDir, "10-weft.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(conf), `"portmap"`) || !strings.Contains(string(conf), h.Socket) {
		t.Errorf("conflist does not chain portmap or name the socket %s:\n%s", h.Socket, conf)
	}
	tool := testbed.BuildCNITool(t)
	ns := bed.AddNamespace("tool")
	nsPath := "/var/run/netns/" + ns
	links := sortedLinks(t, h)
	cnitool := func(cmd string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		c := h.Command(ctx, "env", "NETCONFPATH="+confDir, "CNI_PATH="+binDir,
			"CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAME=tool;K8S_POD_NAMESPACE=e2e", tool, cmd, "weft", nsPath)
		out, err := c.CombinedOutput()
		return string(out), err
	}
	// cnitool keys the attachment by the netns path; a failed run leaves
	// its libcni cache entry behind.
	t.Cleanup(func() {
		cached, _ := filepath.Glob("/var/lib/cni/results/weft-cnitool-*")
		for _, f := range cached {
			if b, err := os.ReadFile(f); err == nil && strings.Contains(string(b), nsPath) {
				_ = os.Remove(f)
			}
		}
	})

	start := time.Now()
	out, err := cnitool("add")
	if err != nil {
		t.Fatalf("cnitool add: %v\n%s", err, out)
	}
	t.Logf("cnitool add took %v", time.Since(start).Round(time.Millisecond))
	var res cniResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("cnitool add printed no result: %v\n%s", err, out)
	}
	addr, gw, err := res.addr()
	if err != nil {
		t.Fatalf("cnitool add result: %v\n%s", err, out)
	}
	if res.CNIVersion != "1.0.0" || !slices.ContainsFunc(res.Interfaces, func(i struct {
		Name    string `json:"name"`
		Sandbox string `json:"sandbox"`
	}) bool {
		return i.Name == "eth0" && i.Sandbox == nsPath
	}) {
		t.Errorf("result: want cniVersion 1.0.0 and eth0 in %s:\n%s", nsPath, out)
	}
	if len(res.DNS.Nameservers) == 0 || res.DNS.Nameservers[0] != gw.String() {
		t.Errorf("result dns nameservers %v; want the gateway %s", res.DNS.Nameservers, gw)
	}
	inPod := func(argv ...string) (string, error) {
		o, err := exec.Command("nsenter", append([]string{"--net=" + nsPath, "--"}, argv...)...).CombinedOutput()
		return string(o), err
	}
	if o, err := inPod("ping", "-c", "2", "-W", "2", "-i", "0.2", "-q", gw.String()); err != nil {
		t.Errorf("pod %s cannot ping its gateway %s: %v\n%s", addr, gw, err, o)
	}
	pods, err := podsOn(h)
	if err != nil {
		t.Fatal(err)
	}
	var podID string
	for id, p := range pods {
		if p.Name == "tool.e2e" {
			podID = id
			if p.Address != addr.Addr().String() && p.Address != addr.String() {
				t.Errorf("status lists tool.e2e at %s; cnitool got %s", p.Address, addr)
			}
		}
	}
	if podID == "" {
		t.Errorf("status pods %v do not list tool.e2e", pods)
	}
	wantAllocated(t, h, base+1, "one more address allocated after add")

	if out, err := cnitool("check"); err != nil {
		t.Errorf("cnitool check after add: %v\n%s", err, out)
	}
	// A pod whose default route is gone fails CHECK.
	if o, err := inPod("ip", "route", "del", "default"); err != nil {
		t.Fatalf("remove the pod's default route: %v\n%s", err, o)
	}
	if out, err := cnitool("check"); err == nil {
		t.Errorf("cnitool check passed with the pod's default route removed:\n%s", out)
	} else {
		t.Logf("check without the default route fails as it should: %s", strings.SplitN(out, "\n", 2)[0])
	}

	for i := 1; i <= 2; i++ { // DEL is idempotent
		if out, err := cnitool("del"); err != nil {
			t.Fatalf("cnitool del #%d: %v\n%s", i, err, out)
		}
	}
	wantLinks(t, h, links, "no veth left after cnitool del")
	wantAllocated(t, h, base, "the address released after cnitool del")
	if pods, err := podsOn(h); err != nil || pods[podID] != (client.Pod{}) {
		t.Errorf("status still lists the attachment %s after del: %v %v", podID, pods[podID], err)
	}
}

// TestCNIContainerd covers issue 5's acceptance 3: containerd's CRI plugin
// (with runc) on two hosts runs pods through the conflist `weft setup-cni`
// wrote; the pods ping each other across hosts (over VXLAN/direct, and
// over WireGuard with a secret), a pod's name resolves from the other
// host's pod, and crictl stopp + rmp leave no veth, no address and no name
// behind, even when the peer is down during the removal.
func TestCNIContainerd(t *testing.T) {
	testbed.NeedCRI(t)
	for _, tc := range []struct {
		name   string
		secure bool
	}{
		{"insecure", false},
		{"wireguard", true},
	} {
		t.Run(tc.name, func(t *testing.T) { testContainerd(t, tc.secure) })
	}
}

func testContainerd(t *testing.T, secure bool) {
	bed := testbed.New(t, 2)
	bed.DumpLogsOnFailure(t)
	h1, h2 := bed.Hosts[0], bed.Hosts[1]
	relaunch := []string{"--insecure"}
	if secure {
		launchSecureMesh(t, bed)
		relaunch = nil // the secret is in h1's data directory
	} else {
		h1.Launch(t, "--insecure")
		h2.Launch(t, "--insecure", h1.Addr.String())
	}
	waitAlive(t, bed.Hosts, 2, 30*time.Second)
	base := waitIPAMReady(t, bed.Hosts)
	if st, err := h1.Status(); err == nil {
		t.Logf("h1: transport %s, encrypted %v", st.Transport, st.Encrypted)
		if st.Encrypted != secure {
			t.Errorf("h1 reports encrypted=%v; want %v", st.Encrypted, secure)
		}
	}

	runtimes := make([]*testbed.Containerd, 2)
	links := make([][]string, 2)
	for i, h := range bed.Hosts {
		bin, conf := h.SetupCNI(t)
		links[i] = sortedLinks(t, h)
		runtimes[i] = h.StartContainerd(t, bin, conf)
	}
	names := []string{"web", "db"}
	pods := make([]testbed.PodInfo, 2)
	for i, r := range runtimes {
		start := time.Now()
		id := r.RunPod(t, names[i], "shop", testbed.PortMapping{ContainerPort: 8080, HostPort: 18080})
		t.Logf("crictl runp %s on %s: %v", names[i], bed.Hosts[i].Name, time.Since(start).Round(time.Millisecond))
		var err error
		if pods[i], err = r.Inspect(id); err != nil {
			t.Fatal(err)
		}
		t.Logf("pod %s.shop on %s: %s (sandbox %.12s)", names[i], bed.Hosts[i].Name, pods[i].IP, id)
		att, err := podsOn(bed.Hosts[i])
		if err != nil {
			t.Fatal(err)
		}
		if p := att[id]; p.Name != names[i]+".shop" || !strings.HasPrefix(p.Address, pods[i].IP.String()) {
			t.Errorf("status of %s lists sandbox %.12s as %+v; want %s.shop at %s", bed.Hosts[i].Name, id, p, names[i], pods[i].IP)
		}
	}

	testutil.Eventually(t, 30*time.Second, "pods to ping each other across hosts", func() error {
		if err := pods[0].Ping(pods[1].IP); err != nil {
			return err
		}
		return pods[1].Ping(pods[0].IP)
	})

	// hostPort through the chained portmap plugin, which gets weft-cni's
	// result as prevResult: h1 reaches the db pod at h2's underlay address.
	l, err := pods[1].Listen(":8080")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	testbed.ServeReply(l, []byte("db\n"))
	testutil.Eventually(t, 20*time.Second, "h1 to reach the db pod through hostPort 18080 on h2", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		c, err := testbed.DialIn(ctx, h1.NS, "tcp", netip.AddrPortFrom(h2.Addr, 18080).String())
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		b, err := io.ReadAll(c)
		if string(b) != "db\n" {
			return fmt.Errorf("read %q, %v; want \"db\\n\"", b, err)
		}
		return nil
	})

	fromDB := resolver{"pod db on h2", pods[1].Exec, bridgeOf(t, h2)}
	took := waitDig(t, 20*time.Second, []resolver{fromDB}, "web.shop.weft.local", wantAddrs(pods[0].IP))
	t.Logf("web.shop resolved from the pod on h2 after %v", took.Round(time.Millisecond))

	for i, r := range runtimes {
		start := time.Now()
		if err := r.RemovePod(pods[i].ID); err != nil {
			t.Fatal(err)
		}
		t.Logf("crictl stopp+rmp %s: %v", names[i], time.Since(start).Round(time.Millisecond))
	}
	for i, h := range bed.Hosts {
		wantLinks(t, h, links[i], "no veth left on "+h.Name+" after stopp+rmp")
		wantAllocated(t, h, base[i], "the pod's address released on "+h.Name)
		if att, err := podsOn(h); err != nil || len(att) != 0 {
			t.Errorf("%s still lists attachments %v (%v)", h.Name, att, err)
		}
	}
	waitDig(t, 20*time.Second, []resolver{{"host h2", h2.Run, bridgeOf(t, h2)}}, "web.shop.weft.local", wantStatus("NXDOMAIN"))

	// The peer is down while the runtime removes a pod: the removal still
	// succeeds, and the peer frees the address when it is back.
	id := runtimes[0].RunPod(t, "cache", "shop")
	wantAllocated(t, h1, base[0]+1, "the third pod's address allocated on h1")
	h1.Stop()
	if err := runtimes[0].RemovePod(id); err != nil {
		t.Fatalf("stopp+rmp with the peer down: %v", err)
	}
	wantLinks(t, h1, links[0], "no veth left on h1 after stopp+rmp with the peer down")
	h1.Launch(t, relaunch...)
	wantAllocated(t, h1, base[0], "the spooled release applied when h1's peer is back")
	if att, err := podsOn(h1); err != nil || len(att) != 0 {
		t.Errorf("h1 still lists attachments %v after its restart (%v)", att, err)
	}
}

// TestCNIConcurrentPods covers issue 5's acceptance 4: 30 weft-cni ADD
// executions at once on one host give 30 distinct addresses with
// connectivity to the gateway and to a pod on another host; 30 DELs at
// once free all 30.
func TestCNIConcurrentPods(t *testing.T) {
	const n = 30
	bed := testbed.New(t, 2)
	bed.DumpLogsOnFailure(t)
	h1, h2 := bed.Hosts[0], bed.Hosts[1]
	h1.Launch(t, "--insecure")
	h2.Launch(t, "--insecure", h1.Addr.String())
	waitAlive(t, bed.Hosts, 2, 30*time.Second)
	base := waitIPAMReady(t, bed.Hosts)[0]
	remote := h2.AddPod(t, "remote")
	links := sortedLinks(t, h1)

	type pod struct {
		ns, id string
		addr   netip.Prefix
		gw     netip.Addr
	}
	pods := make([]pod, n)
	for i := range pods {
		pods[i] = pod{ns: bed.AddNamespace(fmt.Sprintf("c%02d", i)), id: fmt.Sprintf("%s-c%02d", bed.Prefix, i)}
	}
	conf := h1.CNIConfig("1.0.0")
	cni := func(cmd string, p pod) (string, error) {
		args := fmt.Sprintf("IgnoreUnknown=1;K8S_POD_NAME=c%s;K8S_POD_NAMESPACE=conc", p.id[len(p.id)-2:])
		return h1.CNI(cmd, p.id, "/var/run/netns/"+p.ns, "eth0", args, conf)
	}
	parallel := func(limit int, fn func(i int) error) []error {
		errs := make([]error, n)
		sem := make(chan struct{}, limit)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				errs[i] = fn(i)
			}()
		}
		wg.Wait()
		return errs
	}
	t.Cleanup(func() { // pods of a failed run
		parallel(n, func(i int) error { _, err := cni("DEL", pods[i]); return err })
	})

	start := time.Now()
	errs := parallel(n, func(i int) error {
		out, err := cni("ADD", pods[i])
		if err != nil {
			return fmt.Errorf("ADD %s: %v: %s", pods[i].id, err, out)
		}
		var res cniResult
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			return fmt.Errorf("ADD %s result: %v: %s", pods[i].id, err, out)
		}
		pods[i].addr, pods[i].gw, err = res.addr()
		return err
	})
	t.Logf("%d concurrent ADDs took %v", n, time.Since(start).Round(time.Millisecond))
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	seen := map[netip.Addr]string{}
	for _, p := range pods {
		if other, dup := seen[p.addr.Addr()]; dup {
			t.Errorf("%s and %s both got %s", other, p.id, p.addr)
		}
		seen[p.addr.Addr()] = p.id
	}
	wantAllocated(t, h1, base+n, fmt.Sprintf("%d more addresses allocated on h1", n))

	errs = parallel(8, func(i int) error {
		p := &testbed.Pod{NS: pods[i].ns}
		if err := p.Ping(pods[i].gw); err != nil {
			return err
		}
		return testutil.Poll(30*time.Second, func() error { return p.Ping(remote.Addr.Addr()) })
	})
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}

	start = time.Now()
	errs = parallel(n, func(i int) error {
		if out, err := cni("DEL", pods[i]); err != nil {
			return fmt.Errorf("DEL %s: %v: %s", pods[i].id, err, out)
		}
		return nil
	})
	t.Logf("%d concurrent DELs took %v", n, time.Since(start).Round(time.Millisecond))
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	wantAllocated(t, h1, base, fmt.Sprintf("all %d addresses freed on h1", n))
	wantLinks(t, h1, links, "no veth left on h1")
	if att, err := podsOn(h1); err != nil || len(att) != 0 {
		t.Errorf("h1 still lists attachments %v (%v)", att, err)
	}
}

// TestCNIBench runs scripts/bench-cni.sh (ADD/DEL p50/p99 of weft-cni and
// of bridge+host-local, same run) against a real peer on a test bed. It
// takes a while, so it runs only with WEFT_CNI_BENCH=1 (N=pods, default 100).
func TestCNIBench(t *testing.T) {
	if os.Getenv("WEFT_CNI_BENCH") != "1" {
		t.Skip("benchmark: set WEFT_CNI_BENCH=1")
	}
	bed := testbed.New(t, 1)
	bed.DumpLogsOnFailure(t)
	h := bed.Hosts[0]
	h.Launch(t, "--insecure")
	waitIPAMReady(t, bed.Hosts)
	cmd := exec.Command("bash", filepath.Join("..", "scripts", "bench-cni.sh"))
	cmd.Env = append(os.Environ(), "WEFT_SOCKET="+h.Socket, "WEFT_NETNS=/var/run/netns/"+h.NS,
		"WEFT_CNI="+testbed.Binary("weft-cni"))
	out, err := cmd.CombinedOutput()
	t.Logf("bench-cni.sh on %s (loadavg %s):\n%s", h.Name, loadavg(), out)
	if err != nil {
		t.Fatalf("bench-cni.sh: %v", err)
	}
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.TrimSpace(string(b))
}
