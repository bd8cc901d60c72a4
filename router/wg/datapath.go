package wg

// The userspace datapath is its own process so that the control plane can
// crash, be killed or be upgraded while pod traffic keeps flowing: the TUN
// device, the WireGuard sessions and the UDP socket all live here, and the
// control plane only talks to it through the UAPI socket (wgctrl). The
// process is started detached (new session, stdio away from the parent) and
// ends only when asked (SIGTERM/SIGINT, the UAPI socket being removed) or
// when its interface is deleted.
//
// Pipeline (wireguard-go): TUN read (GSO super-packets via IFF_VNET_HDR) →
// encrypt workers → UDP send with UDP_SEGMENT; UDP receive with UDP_GRO →
// decrypt workers → TUN write with GRO coalescing. tun.CreateTUN and
// conn.NewDefaultBind negotiate these offloads; without them throughput
// falls by ~3/4 (docs/baselines.md), so the TUN is never created any other way.

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
)

// socketDir is where wireguard-go's ipc package puts UAPI sockets; the
// pidfile of a datapath process lives beside its socket.
const socketDir = "/var/run/wireguard"

func socketPath(name string) string { return filepath.Join(socketDir, name+".sock") }
func pidPath(name string) string    { return filepath.Join(socketDir, name+".pid") }

// RunDatapath is the body of `weft datapath --iface NAME --mtu N`: it creates
// the TUN device NAME with offloads, a wireguard-go device on it and the UAPI
// listener /var/run/wireguard/NAME.sock, writes NAME.pid beside it and serves
// until ctx is done, SIGTERM/SIGINT arrives, the socket is removed or the
// interface is deleted; then it closes everything and returns. SIGHUP is
// ignored: losing the parent or its terminal never ends the datapath.
func RunDatapath(ctx context.Context, name string, mtu int, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "wg-datapath", "iface", name)
	if err := validateLink(name, mtu); err != nil {
		return fmt.Errorf("datapath %s: %w", name, err)
	}
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	tuneRuntime(logger)

	tdev, err := tun.CreateTUN(name, mtu)
	if err != nil {
		return fmt.Errorf("datapath %s: create TUN: %w", name, err)
	}
	if err := setTxQueueLen(name, tunTxQueueLen); err != nil {
		logger.Warn("keeping the default TUN queue length", "err", err)
	}
	btun, err := newBatchTUN(tdev)
	if err != nil {
		tdev.Close()
		return fmt.Errorf("datapath %s: %w", name, err)
	}
	tdev = btun
	uapiFile, err := ipc.UAPIOpen(name)
	if err != nil {
		tdev.Close()
		return fmt.Errorf("datapath %s: open UAPI socket: %w", name, err)
	}
	dev := device.NewDevice(tdev, conn.NewDefaultBind(), deviceLogger(logger))
	defer dev.Close() // closes the TUN too
	// The pidfile exists before the socket answers, so whoever sees the
	// device through wgctrl can also stop it.
	if err := writePidfile(name); err != nil {
		uapiFile.Close()
		return fmt.Errorf("datapath %s: %w", name, err)
	}
	defer removePidfile(name)
	uapi, err := ipc.UAPIListen(name, uapiFile)
	uapiFile.Close()
	if err != nil {
		return fmt.Errorf("datapath %s: UAPI listen: %w", name, err)
	}
	defer uapi.Close() // unlinks the socket

	uapiErr := make(chan error, 1)
	acceptDone := make(chan struct{})
	go func() {
		defer close(acceptDone)
		for {
			c, err := uapi.Accept()
			if err != nil {
				uapiErr <- err
				return
			}
			go dev.IpcHandle(c)
		}
	}()
	logger.Info("datapath running", "mtu", mtu, "pid", os.Getpid(), "batch", dev.BatchSize())

	select {
	case <-ctx.Done():
		logger.Info("datapath stopping", "reason", context.Cause(ctx))
	case err := <-uapiErr:
		logger.Info("datapath stopping: UAPI socket gone", "err", err)
	case <-dev.Wait():
		logger.Info("datapath stopping: device closed (interface deleted?)")
	}
	uapi.Close()
	<-acceptDone
	dev.Close()
	return nil
}

// writePidfile records our pid beside the UAPI socket so Delete can stop us.
func writePidfile(name string) error {
	tmp := pidPath(name) + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		return fmt.Errorf("write pidfile: %w", err)
	}
	if err := os.Rename(tmp, pidPath(name)); err != nil {
		return fmt.Errorf("write pidfile: %w", err)
	}
	return nil
}

// removePidfile removes the pidfile only if it is still ours.
func removePidfile(name string) {
	if pid, err := readPidfile(name); err == nil && pid == os.Getpid() {
		os.Remove(pidPath(name))
	}
}

// readPidfile returns the pid recorded for name.
func readPidfile(name string) (int, error) {
	b, err := os.ReadFile(pidPath(name))
	if err != nil {
		return 0, fmt.Errorf("read pidfile: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("read pidfile %s: bad pid %q", pidPath(name), b)
	}
	return pid, nil
}

// deviceLogger adapts wireguard-go's printf logger to slog: its verbose
// lines (per handshake, per peer) go to Debug.
func deviceLogger(l *slog.Logger) *device.Logger {
	return &device.Logger{
		Verbosef: func(format string, args ...any) {
			if l.Enabled(context.Background(), slog.LevelDebug) {
				l.Debug(fmt.Sprintf(format, args...))
			}
		},
		Errorf: func(format string, args ...any) {
			l.Error(fmt.Sprintf(format, args...))
		},
	}
}
