// Package testutil is the one set of helpers weft's tests share: waiting
// for an eventual condition, skipping a test that needs root, and the
// network-namespace primitives the kernel test beds are built from, and
// the container-runtime pieces of the two beds that run containerd
// (runtime.go: its configuration, its shims, cgroup trees). It
// imports no weft package, so every package's tests can use it. It does not
// build beds: the multi-host bed (a switch and hosts) is test/testbed.
//
//	testutil.Root(t, "ip", "nsenter")
//	path := testutil.NetNS(t, testutil.Prefix("wc")+"-pod")
//	err := testutil.InNetNS(path, func() error { return netlink.LinkSetUp(lo) })
//	testutil.Eventually(t, 5*time.Second, "route restored", func() error { return check() })
package testutil

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Polling starts fast, so that a condition that holds after a few
// milliseconds (a listener, a debounced Set) costs the test no more than
// that, and backs off to maxPoll, so that a slow one (gossip convergence,
// checked by running the CLI on every host) does not load the machine.
const (
	firstPoll = 5 * time.Millisecond
	maxPoll   = 200 * time.Millisecond
)

// Poll calls cond until it returns nil or d has passed, and returns cond's
// last error (nil once it held). It is Eventually for callers that must
// not fail the test: other goroutines, known bugs, cleanup.
func Poll(d time.Duration, cond func() error) error { return poll(d, firstPoll, maxPoll, cond) }

// poll calls cond until it returns nil or d has passed, first after
// first, the wait doubling up to most.
func poll(d, first, most time.Duration, cond func() error) error {
	deadline := time.Now().Add(d)
	wait := first
	for {
		err := cond()
		if err == nil || !time.Now().Before(deadline) {
			return err
		}
		time.Sleep(min(wait, time.Until(deadline)))
		wait = min(2*wait, most)
	}
}

// Eventually polls cond until it returns nil and fails the test with
// cond's last error when it has not after d. what names the condition in
// the failure.
func Eventually(t testing.TB, d time.Duration, what string, cond func() error) {
	t.Helper()
	if err := Poll(d, cond); err != nil {
		t.Fatalf("timed out after %v waiting for %s: %v", d, what, err)
	}
}

// EventuallyEvery is Eventually polling at a fixed interval: for a
// condition whose check loads what the test measures.
func EventuallyEvery(t testing.TB, d, every time.Duration, what string, cond func() error) {
	t.Helper()
	if err := poll(d, every, every, cond); err != nil {
		t.Fatalf("timed out after %v waiting for %s: %v", d, what, err)
	}
}

// Root skips the test unless it runs as root and every need is met: a
// command name must be on PATH, a path (it contains a "/", such as
// /dev/net/tun) must exist. The skip says what is missing.
func Root(t testing.TB, needs ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, links, privileged ports)")
	}
	for _, n := range needs {
		if strings.Contains(n, "/") {
			if _, err := os.Stat(n); err != nil {
				t.Skipf("needs %s: %v", n, err)
			}
		} else if _, err := exec.LookPath(n); err != nil {
			t.Skipf("needs %s on PATH (scripts/deps.sh installs it)", n)
		}
	}
}

// Prefix returns kind followed by four random hex digits, a prefix for the
// names of the namespaces, links and files one test run creates, so that
// runs side by side and leftovers of a killed run never collide. Keep kind
// short: a link name has at most 15 bytes.
func Prefix(kind string) string {
	var b [2]byte
	_, _ = rand.Read(b[:])
	return kind + hex.EncodeToString(b[:])
}
