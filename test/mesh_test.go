package test

import (
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/test/testbed"
)

// launchSecureMesh launches h1 as the first peer and every other host with
// the previous host's address and h1's secret.
func launchSecureMesh(t testing.TB, bed *testbed.Bed) string {
	t.Helper()
	h1 := bed.Hosts[0]
	h1.Launch(t)
	secret := filepath.Join(bed.Dir, "secret")
	testutil.Eventually(t, 20*time.Second, "h1 to create the secret", func() error {
		b, err := os.ReadFile(filepath.Join(h1.Dir, "data", "secret"))
		if err != nil {
			return err
		}
		return os.WriteFile(secret, []byte("  "+string(b)+"\n\n"), 0o600) // whitespace is ignored
	})
	for i, h := range bed.Hosts[1:] {
		h.Launch(t, "--password-file", secret, bed.Hosts[i].Addr.String())
	}
	return secret
}

func waitAlive(t *testing.T, hosts []*testbed.Host, want int, within time.Duration) {
	t.Helper()
	testutil.Eventually(t, within, fmt.Sprintf("every peer to see %d alive", want), func() error {
		for _, h := range hosts {
			n, err := h.AliveCount()
			if err != nil {
				return err
			}
			if n != want {
				return fmt.Errorf("%s sees %d alive", h.Name, n)
			}
		}
		return nil
	})
}

func peerState(t *testing.T, h *testbed.Host, name string) (state, id string) {
	t.Helper()
	st, err := h.Status()
	if err != nil {
		return "", ""
	}
	for _, p := range st.Peers {
		if p.Name == name {
			return p.State, p.ID
		}
	}
	return "", ""
}

func TestMeshFormsFailsAndRejoins(t *testing.T) {
	bed := testbed.New(t, 5)
	bed.DumpLogsOnFailure(t)
	secret := launchSecureMesh(t, bed)

	// 1. Every peer reports 5 alive within 10 s of the last launch.
	launched := time.Now()
	waitAlive(t, bed.Hosts, 5, 10*time.Second)
	t.Logf("5 peers saw 5 alive %v after the last launch", time.Since(launched).Round(time.Millisecond))
	// Each peer's userspace WireGuard runs the lean binary beside weft
	// (where the kernel has WireGuard no such process runs).
	if _, err := os.Stat("/sys/module/wireguard"); err != nil {
		testutil.Eventually(t, 30*time.Second, "every peer's datapath to run weft-datapath", func() error {
			for _, h := range bed.Hosts {
				pids := h.DatapathPIDs()
				if len(pids) != 1 {
					return fmt.Errorf("%s: datapath pids %v; want one", h.Name, pids)
				}
				exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pids[0]))
				if err != nil || filepath.Base(exe) != "weft-datapath" {
					return fmt.Errorf("%s: datapath process %d runs %q (%v); want weft-datapath", h.Name, pids[0], exe, err)
				}
			}
			return nil
		})
	}
	// Launched all at once against each other, the peers still form one
	// address ring, never two.
	ringStart := time.Now()
	waitOneRing(t, bed.Hosts)
	t.Logf("one ring on all 5 peers %v after they all saw each other", time.Since(ringStart).Round(time.Millisecond))

	// 2. kill -9 a peer: the others report it dead within 30 s.
	victim := bed.Hosts[2]
	_, oldID := peerState(t, bed.Hosts[0], victim.Name)
	victim.Kill()
	testutil.Eventually(t, 30*time.Second, victim.Name+" reported dead everywhere", func() error {
		for _, h := range bed.Hosts {
			if h == victim {
				continue
			}
			if st, _ := peerState(t, h, victim.Name); st != "dead" {
				return fmt.Errorf("%s sees %s %q", h.Name, victim.Name, st)
			}
		}
		return nil
	})
	// Relaunched with no PEER arguments, it rejoins with the same ID.
	victim.Launch(t)
	waitAlive(t, bed.Hosts, 5, 30*time.Second)
	for _, h := range bed.Hosts {
		if _, id := peerState(t, h, victim.Name); id != oldID {
			t.Errorf("%s sees %s with ID %s; want %s", h.Name, victim.Name, id, oldID)
		}
	}

	// 3. A 6th host with a wrong secret, then with none, never becomes a member.
	bad := bed.AddHost()
	wrong := filepath.Join(bed.Dir, "wrong")
	if err := os.WriteFile(wrong, []byte("not-the-secret-of-this-mesh"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"wrong secret", []string{"--password-file", wrong, bed.Hosts[0].Addr.String()}, "secret"},
		{"no secret", []string{bed.Hosts[0].Addr.String()}, "secret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_ = os.RemoveAll(filepath.Join(bad.Dir, "data", "secret"))
			bad.Launch(t, tc.args...)
			code, exited := bad.Wait(30 * time.Second)
			if !exited {
				bad.Kill()
				t.Fatalf("peer with %s still running after 30 s", tc.name)
			}
			if code == 0 {
				t.Errorf("peer with %s exited 0", tc.name)
			}
			if log := bad.LastLog(); !strings.Contains(strings.ToLower(log), tc.want) {
				t.Errorf("log of peer with %s does not name the %s:\n%s", tc.name, tc.want, log)
			}
			bad.Kill() // forget the exited process
			for _, h := range bed.Hosts[:5] {
				if st, _ := peerState(t, h, bad.Name); st != "" {
					t.Errorf("%s lists %s (%s) as a peer", h.Name, bad.Name, st)
				}
			}
		})
	}
	_ = secret

	// 4. Garbage on the gossip ports leaves every peer running and the mesh intact.
	sendGarbage(t, bed.Hosts[0].NS, bed.Hosts[1].Addr.String()+":6783", 1000)
	for _, h := range bed.Hosts[:5] {
		if !h.Running() {
			t.Errorf("%s died after garbage", h.Name)
		}
	}
	waitAlive(t, bed.Hosts[:5], 5, 20*time.Second)
}

// sendGarbage sends n random UDP datagrams and n/10 TCP connections of
// random bytes from inside namespace ns to addr.
func sendGarbage(t *testing.T, ns, addr string, n int) {
	t.Helper()
	err := testbed.InNS(ns, func() error {
		u, err := net.Dial("udp", addr)
		if err != nil {
			return err
		}
		buf := make([]byte, 1500)
		for i := 0; i < n; i++ {
			k := 1 + i%1400
			_, _ = rand.Read(buf[:k])
			if i%3 == 0 {
				buf[0] = byte(i % 16) // memberlist message types, to get past the first switch
			}
			_, _ = u.Write(buf[:k])
			if i%100 == 0 {
				time.Sleep(5 * time.Millisecond) // pace: garbage, not a flood
			}
		}
		u.Close()
		for i := 0; i < n/10; i++ {
			c, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err != nil {
				continue
			}
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			b := make([]byte, 1+i*37%4000)
			_, _ = rand.Read(b)
			b[0] = byte(i % 16)
			_, _ = c.Write(b)
			c.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatalf("send garbage: %v", err)
	}
}

func TestStatusWhenNotRunning(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "nobody.sock")
	out, stderr, err := runWeft("--socket", sock, "status")
	if err == nil {
		t.Fatalf("weft status with no peer succeeded: %s", out)
	}
	if !strings.Contains(stderr, "not running") || !strings.Contains(stderr, sock) {
		t.Errorf("weft status error = %q; want it to say the peer is not running at %s", stderr, sock)
	}
}

func TestResetHandsSpaceOver(t *testing.T) {
	bed := testbed.New(t, 2)
	bed.DumpLogsOnFailure(t)
	h1, h2 := bed.Hosts[0], bed.Hosts[1]
	h1.Launch(t, "--insecure")
	h2.Launch(t, "--insecure", h1.Addr.String())
	waitAlive(t, bed.Hosts, 2, 30*time.Second)
	testutil.Eventually(t, 30*time.Second, "h2 to own space and have its bridge", func() error {
		st, err := h2.Status()
		if err != nil {
			return err
		}
		if st.IPAM.Owned == 0 || st.IPAM.Allocated == 0 {
			return fmt.Errorf("h2 owns %d, allocated %d", st.IPAM.Owned, st.IPAM.Allocated)
		}
		return nil
	})
	// h1 takes a handoff only once it holds the ring (it learns the ring
	// h2's consensus formed a moment later; CI once reset h2 before that).
	testutil.Eventually(t, 30*time.Second, "h1 to hold the ring", func() error {
		st, err := h1.Status()
		if err != nil {
			return err
		}
		if st.IPAM.Status != "ready" {
			return fmt.Errorf("h1's ring is %q", st.IPAM.Status)
		}
		return nil
	})
	out := h2.MustRun(t, h2.ResetArgs()...)
	t.Logf("weft reset: %s", out)
	if code, ok := h2.Wait(30 * time.Second); !ok || code != 0 {
		t.Errorf("h2 after reset: exited=%v code=%d; want a clean exit", ok, code)
	}
	testutil.Eventually(t, 30*time.Second, "h1 to own the whole range", func() error {
		st, err := h1.Status()
		if err != nil {
			return err
		}
		if st.IPAM.Owned != 1<<20 {
			return fmt.Errorf("h1 owns %d of %d", st.IPAM.Owned, 1<<20)
		}
		return nil
	})
	for _, dev := range []string{"weft", "weft-vx", "weft-wg"} {
		if out, err := h2.Run("ip", "link", "show", dev); err == nil {
			t.Errorf("%s still exists on h2 after reset: %s", dev, out)
		}
	}
	if out, _ := h2.Run("ip", "route", "show", "proto", "157"); strings.TrimSpace(out) != "" {
		t.Errorf("weft routes left on h2 after reset:\n%s", out)
	}
}

// waitOneRing waits until every host's IPAM is ready with the same ring.
func waitOneRing(t *testing.T, hosts []*testbed.Host) {
	t.Helper()
	testutil.Eventually(t, 60*time.Second, "one ring on every peer", func() error {
		var first string
		for _, h := range hosts {
			st, err := h.Status()
			if err != nil {
				return err
			}
			if st.IPAM.Status != "ready" {
				return fmt.Errorf("%s: IPAM %s", h.Name, st.IPAM.Status)
			}
			var ring []string
			for _, r := range st.IPAM.Ranges {
				ring = append(ring, r.Start+"-"+r.End+"@"+r.Owner)
			}
			got := strings.Join(ring, ",")
			if first == "" {
				first = got
			} else if got != first {
				return fmt.Errorf("%s has ring %s; %s has %s (%d owners, status %s)", h.Name, got, hosts[0].Name, first, len(st.IPAM.Owners), st.IPAM.Status)
			}
		}
		return nil
	})
}
