package testutil

// Named network namespaces are made in process, as `ip netns add` makes
// them (a bind mount of the namespace under /var/run/netns, the directory
// a shared mount point), so that `ip -n NAME` and `nsenter
// --net=/var/run/netns/NAME` work on them, and a bed of thirty pods costs
// no ip processes. Entering one locks the goroutine to its thread; a thread
// that cannot be switched back is discarded with its lock, never reused in
// the wrong namespace.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netnsDir is where named namespaces live, as for iproute2.
const netnsDir = "/var/run/netns"

// NetNSPath returns the path of the named network namespace name.
func NetNSPath(name string) string { return filepath.Join(netnsDir, name) }

// NetNS creates the named network namespace name with its loopback up,
// deletes it when the test and its subtests have finished, and returns its
// path. Processes still inside keep the namespace alive until they exit.
func NetNS(t testing.TB, name string) string {
	t.Helper()
	if err := addNetNS(name); err != nil {
		t.Fatalf("netns add %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := netns.DeleteNamed(name); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Logf("netns del %s: %v", name, err)
		}
	})
	return NetNSPath(name)
}

// InNetNS runs fn on a thread of its own inside the network namespace at
// path and returns fn's error. fn must not call t.Fatal (it runs on
// another goroutine); it may start processes, which inherit the namespace.
func InNetNS(path string, fn func() error) error {
	target, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", path, err)
	}
	defer target.Close()
	return onThread(func() error {
		if err := netns.Set(target); err != nil {
			return fmt.Errorf("enter netns %s: %w", path, err)
		}
		return fn()
	})
}

// onThread runs fn on a locked thread and switches the thread back to its
// namespace afterwards; only a thread switched back is unlocked for reuse.
func onThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("get current netns: %w", err)
			return // the thread is discarded with its lock
		}
		defer orig.Close()
		err = fn()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

func addNetNS(name string) error {
	if err := sharedNetNSDir(); err != nil {
		return err
	}
	return onThread(func() error {
		ns, err := netns.NewNamed(name) // and the thread is inside it
		if err != nil {
			return err
		}
		ns.Close()
		return loopbackUp()
	})
}

// sharedNetNSDir makes netnsDir a shared mount point, as iproute2 does, so
// that deleting a namespace unmounts it in every mount namespace that
// copied it and the kernel frees it sooner.
func sharedNetNSDir() error {
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return err
	}
	err := unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) { // not a mount point yet
		if err = unix.Mount(netnsDir, netnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err == nil {
			err = unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
		}
	}
	if err != nil {
		return fmt.Errorf("make %s a shared mount: %w", netnsDir, err)
	}
	return nil
}

// loopbackUp sets lo up in the calling thread's network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	return nil
}
