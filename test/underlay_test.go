package test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/api/client"
	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/test/testbed"
)

// underlayRange is the test's pool: the upper quarter of the bed's /24
// (.192/26), inside the hosts' subnet, outside their addresses (.11 up)
// and the plain machine's (.3).
func underlayRange(bed *testbed.Bed) netip.Prefix {
	a := bed.Subnet.Addr().As4()
	a[3] = 192
	return netip.PrefixFrom(netip.AddrFrom4(a), 26)
}

// underlayStatus returns h's `weft status underlay --json`.
func underlayStatus(h *testbed.Host) (*client.UnderlayStatus, error) {
	out, stderr, err := h.Weft("status", "underlay", "--json")
	if err != nil {
		return nil, fmt.Errorf("weft status underlay on %s: %v: %s", h.Name, err, stderr)
	}
	var st client.UnderlayStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("decode underlay status of %s: %v", h.Name, err)
	}
	return &st, nil
}

// pingIn pings addr once (with retries inside the deadline) from ns.
func pingIn(ns string, addr netip.Addr) error {
	return testutil.Poll(10*time.Second, func() error {
		out, err := exec.Command("nsenter", "--net=/var/run/netns/"+ns, "--", "ping", "-c", "1", "-W", "1", "-q", addr.String()).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ping %s from %s: %v: %s", addr, ns, err, out)
		}
		return nil
	})
}

// TestUnderlay is issue 17's acceptance: macvlan pods made by weft-cni on
// two hosts, addressed from --underlay-range by the second ring, next to a
// plain machine on the same switch that runs no weft.
func TestUnderlay(t *testing.T) {
	bed := testbed.New(t, 2)
	bed.DumpLogsOnFailure(t)
	h1, h2 := bed.Hosts[0], bed.Hosts[1]
	plainNS, plainAddr := bed.AddInternet()
	rng := underlayRange(bed)
	// The default secure mesh (WireGuard): macvlan pods' packets into the
	// overlay must pass the peers' AllowedIPs.
	launchSecureMeshWith(t, bed, "--underlay-range", rng.String(), "--underlay-gateway", plainAddr.String())
	waitReady(t, bed.Hosts, "wireguard")
	hostAddr := map[string]netip.Addr{}
	testutil.Eventually(t, 60*time.Second, "underlay pools ready with a weft-mv address", func() error {
		for _, h := range bed.Hosts {
			st, err := underlayStatus(h)
			if err != nil {
				return err
			}
			if st.Status != "ready" || st.HostAddress == "" {
				return fmt.Errorf("%s: underlay %q, host address %q", h.Name, st.Status, st.HostAddress)
			}
			if st.Range != rng.String() || st.Master != "eth0" || st.Gateway != plainAddr.String() {
				return fmt.Errorf("%s: underlay status %+v", h.Name, st)
			}
			hostAddr[h.Name] = netip.MustParseAddr(st.HostAddress)
		}
		return nil
	})

	// 4 (set-up): the plain machine takes the next address of h1's space,
	// the one h1's first pod would get.
	squat := hostAddr["h1"].Next()
	st1, err := underlayStatus(h1)
	if err != nil {
		t.Fatal(err)
	}
	self1, err := h1.Status()
	if err != nil {
		t.Fatal(err)
	}
	if owner := testbed.OwnerOf(st1.Ranges, squat); owner != self1.ID {
		t.Fatalf("the address after h1's weft-mv %s, %s, is owned by %q; ring %s", hostAddr["h1"], squat, owner, testbed.RangesString(st1.Ranges))
	}
	if out, err := exec.Command("ip", "-n", plainNS, "addr", "add", netip.PrefixFrom(squat, 24).String(), "dev", bed.Prefix+"-in").CombinedOutput(); err != nil {
		t.Fatalf("plain machine takes %s: %v: %s", squat, err, out)
	}

	capture := bed.Capture(t, h1.SwitchPort())
	pods := []*testbed.Pod{h1.AddMacvlanPod(t, "a"), h1.AddMacvlanPod(t, "b"), h2.AddMacvlanPod(t, "c"), h2.AddMacvlanPod(t, "d")}
	seen := map[netip.Addr]string{}
	for _, p := range pods {
		a := p.Addr.Addr()
		if p.Addr.Bits() != bed.Subnet.Bits() || !rng.Contains(a) {
			t.Fatalf("pod %s got %s: want an address of %s with the subnet's length /%d", p.ContainerID, p.Addr, rng, bed.Subnet.Bits())
		}
		if a == squat || a == hostAddr["h1"] || a == hostAddr["h2"] {
			t.Fatalf("pod %s got %s, which is taken (plain machine %s, weft-mv %v)", p.ContainerID, a, squat, hostAddr)
		}
		if other, dup := seen[a]; dup {
			t.Fatalf("pods %s and %s both got %s", other, p.ContainerID, a)
		}
		seen[a] = p.ContainerID
	}

	t.Run("4 taken address skipped and reported", func(t *testing.T) {
		st, err := underlayStatus(h1)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, tk := range st.Taken {
			if tk.Address == squat.String() && strings.Contains(tk.Reason, "ARP") {
				found = true
			}
		}
		if !found {
			t.Fatalf("h1's underlay status does not report %s as taken: %+v", squat, st.Taken)
		}
		body := metricsOf(t, h1)
		if !strings.Contains(body, "weft_underlay_taken_total 1") {
			t.Errorf("/metrics of h1 lacks weft_underlay_taken_total 1")
		}
	})

	t.Run("1 pods, plain machine, wire", func(t *testing.T) {
		capture.Reset()
		var wg sync.WaitGroup
		errs := make(chan error, 32)
		for _, p := range pods {
			wg.Go(func() {
				for _, q := range pods {
					if q != p {
						if err := pingIn(p.NS, q.Addr.Addr()); err != nil {
							errs <- err
						}
					}
				}
				if err := pingIn(p.NS, plainAddr); err != nil {
					errs <- err
				}
				if err := pingIn(plainNS, p.Addr.Addr()); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		// What crossed h1's switch port: every ping between a pod of h1 and
		// a pod of h2 or the plain machine, as plain ICMP in an Ethernet
		// frame from the pod's own MAC with the pod's own address (not
		// inside a tunnel, not translated).
		frames := capture.Frames()
		for _, p := range pods[:2] {
			mac, a := p.MAC(), p.Addr.Addr()
			for _, dst := range []netip.Addr{pods[2].Addr.Addr(), pods[3].Addr.Addr(), plainAddr} {
				ok := false
				for _, f := range frames {
					if f.Src == mac && f.EtherType == 0x0800 && f.IPSrc == a && f.IPDst == dst && f.Proto == 1 {
						ok = true
					}
				}
				if !ok {
					t.Errorf("no plain ICMP %s -> %s from MAC %s on h1's switch port (%d frames)", a, dst, mac, len(frames))
				}
			}
		}
		for _, f := range frames {
			if f.Inner != nil && (seen[f.Inner.IPSrc] != "" || seen[f.Inner.IPDst] != "") {
				t.Errorf("pod traffic encapsulated: VXLAN %s -> %s carries %s -> %s", f.IPSrc, f.IPDst, f.Inner.IPSrc, f.Inner.IPDst)
			}
		}
	})

	t.Run("DNS names and status of macvlan pods", func(t *testing.T) {
		testutil.Eventually(t, 30*time.Second, "c.h2 answers on h1 with its macvlan address", func() error {
			out, stderr, err := h1.Weft("dns", "lookup", "c.h2")
			if err != nil || !strings.Contains(out, pods[2].Addr.Addr().String()) {
				return fmt.Errorf("dns lookup c.h2 on h1 = %v: %s %s", err, out, stderr)
			}
			return nil
		})
		st, err := h1.Status()
		if err != nil {
			t.Fatal(err)
		}
		modes := map[string]string{}
		for _, p := range st.Pods {
			modes[p.ContainerID] = p.Mode
		}
		for _, p := range pods[:2] {
			if modes[p.ContainerID] != "macvlan" {
				t.Errorf("h1 status lists pod %s with mode %q; want macvlan (%+v)", p.ContainerID, modes[p.ContainerID], st.Pods)
			}
		}
		out, _, err := h1.Weft("status", "ipam")
		if err != nil || !strings.Contains(out, "Underlay range "+rng.String()) || !strings.Contains(out, squat.String()) {
			t.Errorf("weft status ipam shows no underlay pool with the taken %s: %v\n%s", squat, err, out)
		}
	})

	t.Run("2 host reaches its pods", func(t *testing.T) {
		for _, p := range pods {
			if err := pingIn(p.Host.NS, p.Addr.Addr()); err != nil {
				t.Error(err)
			}
		}
		l := testbed.ListenTCP(t, pods[0].NS, net.JoinHostPort(pods[0].Addr.Addr().String(), "8080"))
		testbed.ServeReply(l, []byte("ok"))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := testbed.DialIn(ctx, h1.NS, "tcp", net.JoinHostPort(pods[0].Addr.Addr().String(), "8080"))
		if err != nil {
			t.Fatalf("TCP probe from h1 to its pod: %v", err)
		}
		b, _ := io.ReadAll(c)
		c.Close()
		if string(b) != "ok" {
			t.Fatalf("TCP probe from h1 read %q", b)
		}
	})

	t.Run("3 macvlan and overlay pods over WireGuard", func(t *testing.T) {
		o := h2.AddPod(t, "o")
		if err := pingIn(pods[0].NS, o.Addr.Addr()); err != nil {
			t.Error(err)
		}
		if err := pingIn(o.NS, pods[0].Addr.Addr()); err != nil {
			t.Error(err)
		}
		// The overlay pod sees the macvlan pod's own address: underlay pods
		// are never masqueraded.
		l := testbed.ListenTCP(t, o.NS, net.JoinHostPort(o.Addr.Addr().String(), "8081"))
		from := make(chan string, 1)
		go func() {
			c, err := l.Accept()
			if err != nil {
				from <- err.Error()
				return
			}
			from <- c.RemoteAddr().(*net.TCPAddr).IP.String()
			c.Close()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := testbed.DialIn(ctx, pods[0].NS, "tcp", net.JoinHostPort(o.Addr.Addr().String(), "8081"))
		if err != nil {
			t.Fatalf("macvlan pod to overlay pod over TCP: %v", err)
		}
		c.Close()
		if got := <-from; got != pods[0].Addr.Addr().String() {
			t.Errorf("the overlay pod saw the macvlan pod as %s; want its own address %s", got, pods[0].Addr.Addr())
		}
		o.Del(t)
	})

	t.Run("6 bad input leaves nothing", func(t *testing.T) {
		cases := []struct {
			name, conf, want string
		}{
			{"unknown mode", strings.Replace(h1.MacvlanConfig("1.0.0", ""), `"mode":"macvlan"`, `"mode":"ipvlan-l9"`, 1), "mode"},
			{"missing master", h1.MacvlanConfig("1.0.0", `,"master":"nosuchdev0"`), "nosuchdev0"},
		}
		for _, c := range cases {
			ns := bed.AddNamespace("bad" + strings.ReplaceAll(c.name, " ", "")[:4])
			id := bed.Prefix + "-bad"
			out, err := h1.CNI("ADD", id, "/var/run/netns/"+ns, "eth0", "", c.conf)
			if err == nil || !strings.Contains(out, c.want) {
				t.Errorf("%s: ADD = %v, %s; want an error naming %q", c.name, err, out, c.want)
			}
			assertNothingLeft(t, h1, ns, id, netip.Addr{})
		}
	})

	t.Run("5 concurrent ADDs, DEL leaves nothing", func(t *testing.T) {
		const n = 30
		nss := make([]string, n)
		for i := range n {
			nss[i] = bed.AddNamespace(fmt.Sprintf("m%d", i))
		}
		got := make([]*testbed.Pod, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			h := bed.Hosts[i%2]
			wg.Go(func() { got[i], errs[i] = h.TryAddMacvlanPod(nss[i], fmt.Sprintf("m%d", i)) })
		}
		wg.Wait()
		all := map[netip.Addr]string{}
		for a, id := range seen {
			all[a] = id
		}
		for i, p := range got {
			if errs[i] != nil {
				t.Fatal(errs[i])
			}
			if other, dup := all[p.Addr.Addr()]; dup {
				t.Fatalf("%s and %s both got %s", other, p.ContainerID, p.Addr)
			}
			if p.Addr.Addr() == squat {
				t.Fatalf("%s got the plain machine's %s", p.ContainerID, squat)
			}
			all[p.Addr.Addr()] = p.ContainerID
		}
		for _, p := range append(got, pods...) {
			if err := p.DelMacvlan(); err != nil {
				t.Fatal(err)
			}
			if err := p.DelMacvlan(); err != nil { // DEL is idempotent
				t.Fatalf("second DEL: %v", err)
			}
		}
		for _, p := range append(got, pods...) {
			assertNothingLeft(t, p.Host, p.NS, p.ContainerID, p.Addr.Addr())
		}
	})

	t.Run("5 kill -9 and rmpeer reclaim the underlay space", func(t *testing.T) {
		h2.Kill()
		testutil.Eventually(t, 90*time.Second, "h2 dead on h1", func() error {
			st, err := h1.Status()
			if err != nil {
				return err
			}
			for _, p := range st.Peers {
				if p.Name == "h2" && p.State == "alive" {
					return fmt.Errorf("h2 %s", p.State)
				}
			}
			return nil
		})
		testutil.Eventually(t, 60*time.Second, "rmpeer h2", func() error {
			out, stderr, err := h1.Weft("rmpeer", "h2")
			if err != nil {
				return fmt.Errorf("%v: %s %s", err, out, stderr)
			}
			return nil
		})
		st, err := underlayStatus(h1)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range st.Ranges {
			if r.OwnerName != "h1" {
				t.Errorf("after rmpeer h2, %s-%s is owned by %q", r.Start, r.End, r.OwnerName)
			}
		}
	})
	t.Run("range mismatch and no range", func(t *testing.T) {
		h3, h4 := bed.AddHost(), bed.AddHost()
		secret := filepath.Join(bed.Dir, "secret")
		h3.Launch(t, "--password-file", secret, h1.Addr.String())
		other := netip.PrefixFrom(rng.Addr().Prev().Prev(), 26).Masked() // .128/26
		h4.Launch(t, "--password-file", secret, "--underlay-range", other.String(), h1.Addr.String())
		testutil.Eventually(t, 60*time.Second, "h1 names h4's other underlay range", func() error {
			st, err := h1.Status()
			if err != nil {
				return err
			}
			for _, p := range st.Problems {
				if strings.Contains(p, "h4") && strings.Contains(p, "--underlay-range") {
					return nil
				}
			}
			return fmt.Errorf("problems: %q", st.Problems)
		})
		if !strings.Contains(h1.Log(), "belongs to a different ring") {
			t.Errorf("h1's log has no line about h4's ring of another range")
		}
		testutil.Eventually(t, 60*time.Second, "h3 ready", func() error {
			st, err := h3.Status()
			if err != nil {
				return err
			}
			if st.IPAM.Status != "ready" {
				return fmt.Errorf("h3 ipam %s", st.IPAM.Status)
			}
			return nil
		})
		ns := bed.AddNamespace("nopool")
		id := bed.Prefix + "-nopool"
		out, err := h3.CNI("ADD", id, "/var/run/netns/"+ns, "eth0", "", h3.MacvlanConfig("1.0.0", ""))
		if err == nil || !strings.Contains(out, "--underlay-range") {
			t.Errorf("macvlan ADD on a peer without an underlay range = %v, %s; want an error naming --underlay-range", err, out)
		}
		assertNothingLeft(t, h3, ns, id, netip.Addr{})
		h3.Stop()
		h4.Stop()
	})

	t.Run("weft reset removes weft-mv", func(t *testing.T) {
		if out, err := exec.Command("ip", "-n", h1.NS, "link", "show", "weft-mv").CombinedOutput(); err != nil {
			t.Fatalf("h1 has no weft-mv before the reset: %v: %s", err, out)
		}
		h1.Stop()
		if out, err := h1.Run(h1.ResetArgs()...); err != nil {
			t.Fatalf("weft reset on h1: %v: %s", err, out)
		}
		if out, err := exec.Command("ip", "-n", h1.NS, "link", "show", "weft-mv").CombinedOutput(); err == nil {
			t.Errorf("weft-mv left after weft reset: %s", out)
		}
	})
}

// assertNothingLeft: no interface in the pod's namespace but loopback, no
// route to addr on the host, no allocation for id.
func assertNothingLeft(t *testing.T, h *testbed.Host, ns, id string, addr netip.Addr) {
	t.Helper()
	testutil.Eventually(t, 20*time.Second, "nothing left of "+id, func() error {
		out, err := exec.Command("ip", "-n", ns, "-o", "link", "show").CombinedOutput()
		if err == nil && strings.Count(strings.TrimSpace(string(out)), "\n") > 0 {
			return fmt.Errorf("links left in %s: %s", ns, out)
		}
		if addr.IsValid() {
			r, _ := exec.Command("ip", "-n", h.NS, "route", "show", addr.String()+"/32").CombinedOutput()
			if strings.TrimSpace(string(r)) != "" {
				return fmt.Errorf("route left on %s: %s", h.Name, r)
			}
		}
		st, err := h.Status()
		if err != nil {
			return err
		}
		for _, p := range st.Pods {
			if p.ContainerID == id {
				return fmt.Errorf("allocation left on %s: %+v", h.Name, p)
			}
		}
		return nil
	})
}

// metricsOf returns h's /metrics page.
func metricsOf(t *testing.T, h *testbed.Host) string {
	t.Helper()
	resp, err := h.HTTPClient().Get("http://" + h.Addr.String() + ":6784/metrics")
	if err != nil {
		t.Fatalf("metrics of %s: %v", h.Name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
