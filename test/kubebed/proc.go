package kubebed

// Daemons run as `nsenter --net=NETNS [--mount=NODE-MOUNT-NS] -- argv`,
// each in a session of its own, stdout and stderr to LogDir/<name>.log.
// nsenter (not `ip netns exec`, which remounts /sys and hides the cgroup
// mounts) enters the namespaces and execs argv, so the pid we hold is the
// daemon's. Every daemon is started from one goroutine locked to its
// thread, with Pdeathsig SIGKILL: should the test process die without its
// cleanups (a -timeout panic), the kernel kills the daemons with it, and the
// next Start reaps the rest (see teardown.go). The locked thread exits only
// when the teardown is done.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// spawner starts processes from one thread that lives as long as the
// cluster (Pdeathsig is tied to the thread that forked, not the process).
type spawner struct {
	req  chan *exec.Cmd
	errc chan error
}

func newSpawner() *spawner {
	s := &spawner{req: make(chan *exec.Cmd), errc: make(chan error)}
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		for cmd := range s.req {
			s.errc <- cmd.Start()
		}
	}()
	return s
}

func (s *spawner) start(cmd *exec.Cmd) error {
	s.req <- cmd
	return <-s.errc
}

// close ends the spawner's thread; any child it started that still runs
// gets SIGKILL.
func (s *spawner) close() { close(s.req) }

// daemon is one long-running process of the cluster.
type daemon struct {
	name string
	node *Node // nil: control plane
	log  string
	cmd  *exec.Cmd
	done chan struct{} // closed when it has exited
	user bool          // started by SpawnPlain or SpawnNode
}

func (d *daemon) running() bool {
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM and, after grace, SIGKILL; it returns when the
// daemon has exited.
func (d *daemon) stop(grace time.Duration) {
	if !d.running() {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		return
	case <-time.After(grace):
	}
	_ = d.cmd.Process.Kill()
	<-d.done
}

// nsArgs returns nsenter's arguments for a node's namespaces (both), or a
// host's network namespace.
func nsArgs(netnsPath, mountNS string) []string {
	a := []string{"--net=" + netnsPath}
	if mountNS != "" {
		a = append(a, "--mount="+mountNS)
	}
	return a
}

// spawn starts argv as daemon name in the namespaces of node (nil: the
// control plane's network namespace).
func (c *Cluster) spawn(name string, node *Node, argv ...string) (*daemon, error) {
	netns, mnt := c.ControlPlane.NetNSPath(), ""
	if node != nil {
		netns, mnt = node.NetNSPath(), node.MountNS
	}
	return c.spawnIn(name, netns, mnt, node, false, argv...)
}

// spawnIn starts argv as daemon name in network namespace netns and, if
// not "", mount namespace mnt; user marks a test's own process.
func (c *Cluster) spawnIn(name, netns, mnt string, node *Node, user bool, argv ...string) (*daemon, error) {
	logFile := filepath.Join(c.LogDir, name+".log")
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(f, "==== %s %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(argv, " "))
	c.mu.Lock()
	stopped := c.stopped
	c.mu.Unlock()
	if stopped {
		return nil, fmt.Errorf("start %s: the cluster is stopped", name)
	}
	args := append(append(nsArgs(netns, mnt), "--"), argv...)
	cmd := exec.Command("nsenter", args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	if err := c.spawner.start(cmd); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	d := &daemon{name: name, node: node, log: logFile, cmd: cmd, done: make(chan struct{}), user: user}
	go func() { _ = cmd.Wait(); f.Close(); close(d.done) }()
	c.mu.Lock()
	c.daemons = append(c.daemons, d)
	c.mu.Unlock()
	return d, nil
}

// daemon returns the latest daemon named name, or nil.
func (c *Cluster) daemon(name string) *daemon {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := len(c.daemons) - 1; i >= 0; i-- {
		if c.daemons[i].name == name {
			return c.daemons[i]
		}
	}
	return nil
}

// exited returns an error if d has exited, with the tail of its log.
func exited(d *daemon) error {
	if d.running() {
		return nil
	}
	return fmt.Errorf("%s %w (%v):\n%s", d.name, errDaemonExited, d.cmd.ProcessState, tailFile(d.log, 3000))
}

// run runs a short command and returns its stdout; the error carries
// stderr (and stdout).
func run(ctx context.Context, argv ...string) (string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(tail(stderr.String(), 2000) + "\n" + tail(stdout.String(), 1000))
		return stdout.String(), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, msg)
	}
	return stdout.String(), nil
}

// NodeExec runs argv in node name's network and mount namespaces (where
// its containerd, kubelet and kube-proxy live) and returns its stdout; the
// error carries stderr. It gives up after two minutes.
func (c *Cluster) NodeExec(name string, argv ...string) (string, error) {
	n, err := c.node(name)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return run(ctx, append(append([]string{"nsenter"}, nsArgs(n.NetNSPath(), n.MountNS)...), append([]string{"--"}, argv...)...)...)
}

// PlainExec runs argv in the plain machine's network namespace and returns
// its stdout (the error carries stderr), like NodeExec.
func (c *Cluster) PlainExec(argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return run(ctx, append([]string{"nsenter", "--net=" + c.Plain.NetNSPath(), "--"}, argv...)...)
}

// SpawnPlain starts argv as a long-running process (a server, a prober)
// in the plain machine's network namespace, logging to LogDir/plain-NAME.log.
// The teardown stops it.
func (c *Cluster) SpawnPlain(name string, argv ...string) error {
	_, err := c.spawnIn("plain-"+name, c.Plain.NetNSPath(), "", nil, true, argv...)
	return err
}

// SpawnNode starts argv as a long-running process in node node's network
// and mount namespaces, logging to LogDir/NODE-NAME.log. StopNode and the
// teardown stop it.
func (c *Cluster) SpawnNode(node, name string, argv ...string) error {
	n, err := c.node(node)
	if err != nil {
		return err
	}
	_, err = c.spawnIn(n.Name+"-"+name, n.NetNSPath(), n.MountNS, n, true, argv...)
	return err
}

// ControlPlaneExec runs argv in the control plane's network namespace, like
// PlainExec.
func (c *Cluster) ControlPlaneExec(argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return run(ctx, append([]string{"nsenter", "--net=" + c.ControlPlane.NetNSPath(), "--"}, argv...)...)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func tailFile(file string, n int64) string {
	f, err := os.Open(file)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err.Error()
	}
	off := max(st.Size()-n, 0)
	b := make([]byte, st.Size()-off)
	_, _ = f.ReadAt(b, off)
	s := string(b)
	if off > 0 {
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s = s[i+1:]
		}
		s = "...\n" + s
	}
	return s
}
