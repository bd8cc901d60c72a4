package wg

// The userspace datapath outlives the control plane. Ensure therefore first
// asks the UAPI socket: a device that answers (and whose TUN link is in our
// network namespace — the socket directory is shared by all namespaces) is
// reused as it is. Otherwise the process is started detached: its own
// session (no SIGHUP from a terminal, not in our process group, so a
// kill -9 of the control plane or of its group leaves it alone), stdin from
// /dev/null and stdout/stderr to a log file, never a pipe to us. The child
// is not waited for; we reap it with WNOHANG while it starts and when Delete
// waits for it to end, and if the control plane dies first it is reparented
// to init. Under systemd the unit needs KillMode=process (or the datapath
// its own unit) so that a restart does not kill the cgroup.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// awaitExternal waits for a datapath that someone else starts.
func (d *Device) awaitExternal(ctx context.Context) error {
	d.logger.Info("waiting for the external datapath", "socket", socketPath(d.cfg.Name))
	if !poll(ctx, d.cfg.StartTimeout, 50*time.Millisecond, d.userspaceSeen) {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("wg ensure %s: %w", d.cfg.Name, err)
		}
		return fmt.Errorf("wg ensure %s: %w after %v: the external datapath (weft datapath, the weft-datapath container) does not answer on %s",
			d.cfg.Name, ErrStartTimeout, d.cfg.StartTimeout, socketPath(d.cfg.Name))
	}
	return nil
}

// ensureUserspace reuses a datapath process answering for d's name or
// starts one and waits until wgctrl sees it.
func (d *Device) ensureUserspace(ctx context.Context) error {
	name := d.cfg.Name
	if d.userspaceSeen() {
		link, err := netlink.LinkByName(name)
		if err != nil {
			return fmt.Errorf("wg ensure %s: %w: %w", name, ErrForeignDevice, err)
		}
		if link.Type() != "tuntap" {
			return fmt.Errorf("wg ensure %s: %w (type %s)", name, ErrNotWireGuardLink, link.Type())
		}
		pid, _ := readPidfile(name)
		d.logger.Info("reusing running datapath", "pid", pid)
		return nil
	}
	if link, err := netlink.LinkByName(name); err == nil && link.Type() != "tuntap" {
		return fmt.Errorf("wg ensure %s: %w (type %s)", name, ErrNotWireGuardLink, link.Type())
	}
	if d.cfg.ExternalDatapath {
		if err := d.awaitExternal(ctx); err != nil {
			return err
		}
		return d.ensureUserspace(ctx) // seen now: checks the link and adopts it
	}
	pid, err := startDatapath(d.cfg)
	if err != nil {
		return err
	}
	d.logger.Info("started datapath", "pid", pid, "argv", datapathArgv(d.cfg))
	var exited error
	ok := poll(ctx, d.cfg.StartTimeout, 20*time.Millisecond, func() bool {
		if st, done := reap(pid); done {
			if d.userspaceSeen() {
				return true // another Ensure's datapath won the race for the TUN
			}
			exited = fmt.Errorf("wg ensure %s: %w (%s; log: %s)", name, ErrDatapathExited, st, logName(d.cfg))
			return true
		}
		return d.userspaceSeen()
	})
	if exited != nil {
		return exited
	}
	if !ok {
		unix.Kill(pid, unix.SIGKILL)
		reapWait(pid, time.Second)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("wg ensure %s: %w", name, err)
		}
		return fmt.Errorf("wg ensure %s: %w after %v (log: %s)", name, ErrStartTimeout, d.cfg.StartTimeout, logName(d.cfg))
	}
	return nil
}

// datapathArgv is cfg.DatapathCommand with --iface and --mtu appended.
func datapathArgv(cfg Config) []string {
	return append(slices.Clone(cfg.DatapathCommand), "--iface", cfg.Name, "--mtu", strconv.Itoa(cfg.MTU))
}

func logName(cfg Config) string {
	if cfg.DatapathLog == "" {
		return os.DevNull
	}
	return cfg.DatapathLog
}

// startDatapath starts the detached datapath process and returns its pid.
func startDatapath(cfg Config) (int, error) {
	argv := datapathArgv(cfg)
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return 0, fmt.Errorf("wg start datapath: %w", err)
	}
	defer devnull.Close()
	out, err := os.OpenFile(logName(cfg), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return 0, fmt.Errorf("wg start datapath: open log: %w", err)
	}
	defer out.Close()
	if err := os.MkdirAll(socketDir, 0o755); err != nil {
		return 0, fmt.Errorf("wg start datapath: %w", err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, out, out
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("wg start datapath %q: %w", argv, err)
	}
	pid := cmd.Process.Pid
	// Not waited for through os/exec: reap() collects it with WNOHANG.
	cmd.Process.Release()
	return pid, nil
}

// stopDatapath stops the datapath process serving name and waits until the
// process, the socket and the link are gone, escalating to SIGKILL after
// timeout.
func stopDatapath(name string, timeout time.Duration, logger *slog.Logger) error {
	pid, err := readPidfile(name)
	if err == nil && isDatapath(pid, name) {
		logger.Info("stopping datapath", "pid", pid)
		if err := unix.Kill(pid, unix.SIGTERM); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("wg delete %s: signal %d: %w", name, pid, err)
		}
	} else {
		// No (valid) pidfile: removing the socket makes the process's
		// UAPI listener fail, which ends it.
		pid = 0
		logger.Info("stopping datapath through its UAPI socket")
		if err := os.Remove(socketPath(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("wg delete %s: %w", name, err)
		}
	}
	gone := func() bool {
		if pid != 0 && alive(pid) {
			return false
		}
		_, lerr := netlink.LinkByName(name)
		_, serr := os.Stat(socketPath(name))
		return errors.As(lerr, new(netlink.LinkNotFoundError)) && errors.Is(serr, os.ErrNotExist)
	}
	if poll(context.Background(), timeout, 10*time.Millisecond, gone) {
		return nil
	}
	if pid != 0 {
		logger.Warn("datapath did not stop; killing it", "pid", pid)
		unix.Kill(pid, unix.SIGKILL)
		if poll(context.Background(), 2*time.Second, 10*time.Millisecond, gone) {
			return nil
		}
	}
	return fmt.Errorf("wg delete %s: datapath still present after %v", name, timeout)
}

// isDatapath reports whether pid runs a datapath for name (guards against
// a stale pidfile naming a recycled pid).
func isDatapath(pid int, name string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	args := bytes.Split(bytes.TrimRight(b, "\x00"), []byte{0})
	for i := 0; i+1 < len(args); i++ {
		if string(args[i]) == "--iface" && string(args[i+1]) == name {
			return true
		}
	}
	return false
}

// reap collects pid if it is our exited child; done reports that it has
// exited, with its status.
func reap(pid int) (string, bool) {
	var ws unix.WaitStatus
	got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
	if err != nil || got != pid {
		return "", false
	}
	if ws.Signaled() {
		return "killed by " + ws.Signal().String(), true
	}
	return "exit status " + strconv.Itoa(ws.ExitStatus()), true
}

func reapWait(pid int, timeout time.Duration) {
	poll(context.Background(), timeout, 10*time.Millisecond, func() bool { return !alive(pid) })
}

// alive reports whether pid exists and is not a zombie (reaping it first
// if it is our child).
func alive(pid int) bool {
	reap(pid)
	if err := unix.Kill(pid, 0); errors.Is(err, unix.ESRCH) {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// Format: pid (comm) state ...; comm may contain spaces or ')'.
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}
