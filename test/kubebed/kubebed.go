package kubebed

// Start brings a cluster up in this order, in parallel where nothing
// depends: namespaces and links; then at once the test images (go build +
// WriteImage), the control plane (PKI, etcd, kube-apiserver until /readyz,
// then kube-controller-manager and kube-scheduler) and each node's mount
// namespace and containerd (with the images imported); then per node the
// kubelet and kube-proxy. It returns when every Node is registered, the
// scheduler and controller manager are healthy and the default
// ServiceAccount exists, and with CNI "bridge" when every Node is Ready.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/weftmesh/weft/internal/testutil"
)

// Versions and names the cluster uses.
const (
	K8sVersion   = "v1.37.2"                         // the binaries of scripts/kube-build.sh
	PauseImage   = "localhost/weft-test/pause:1.0"   // containerd's sandbox_image
	TestboxImage = "localhost/weft-test/testbox:1.0" // images/testbox, entrypoint /testbox
	ServiceCIDR  = "10.96.0.0/16"                    // kube-apiserver --service-cluster-ip-range
	APIServerIP  = "10.96.0.1"                       // the kubernetes Service
)

// errDaemonExited: a daemon the cluster waits for has exited (the wait
// ends at once).
var errDaemonExited = errors.New("exited")

// CNI choices of Options.CNI.
const (
	// CNINone installs no network plugin: the nodes stay NotReady until
	// something writes a conflist into their /etc/cni/net.d (weft's
	// DaemonSet does).
	CNINone = "none"
	// CNIBridge writes the reference bridge + host-local + portmap conflist
	// on every node, each with its own /24 of ClusterCIDR, and static routes
	// between the nodes: the baseline for benchmarks.
	CNIBridge = "bridge"
)

// Options configure Start. A zero field takes the value of DefaultOptions.
type Options struct {
	Nodes       int    // kubelet nodes, named n1..nN; at most 50
	CNI         string // CNINone or CNIBridge
	ClusterCIDR string // pod network: kube-proxy's --cluster-cidr; CNIBridge gives node i the i-th /24 of it
	Subnet      string // the nodes' network; "" picks the first free /24 of 192.168.70–79.0/24
	// Images are more image tarballs (docker-archive or OCI) that every
	// node imports before its kubelet starts.
	Images []string
	// KubeletVerbosity is the kubelet's --v.
	KubeletVerbosity int
	// Timeout bounds Start: building the images, the control plane and
	// the nodes (not the one-time Kubernetes build, nor the wait for the
	// machine-wide lock, which have their own).
	Timeout time.Duration
}

// DefaultOptions returns the options a zero Options field takes.
func DefaultOptions() Options {
	return Options{
		Nodes:            3,
		CNI:              CNIBridge,
		ClusterCIDR:      "10.244.0.0/16",
		Subnet:           "",
		KubeletVerbosity: 2,
		Timeout:          5 * time.Minute,
	}
}

// Validate reports what is wrong with o (after defaults).
func (o Options) Validate() error {
	if o.Nodes < 1 || o.Nodes > 50 {
		return fmt.Errorf("kubebed: Nodes %d: want 1..50", o.Nodes)
	}
	if o.CNI != CNINone && o.CNI != CNIBridge {
		return fmt.Errorf("kubebed: CNI %q: want %q or %q", o.CNI, CNINone, CNIBridge)
	}
	p, err := netip.ParsePrefix(o.ClusterCIDR)
	if err != nil || !p.Addr().Is4() || p.Bits() > 23 {
		return fmt.Errorf("kubebed: ClusterCIDR %q: want an IPv4 prefix of /23 or shorter", o.ClusterCIDR)
	}
	if o.CNI == CNIBridge && o.Nodes >= 1<<(24-p.Bits()) {
		return fmt.Errorf("kubebed: ClusterCIDR %s has no /24 for each of %d nodes", p, o.Nodes)
	}
	if o.Subnet != "" {
		s, err := netip.ParsePrefix(o.Subnet)
		if err != nil || !s.Addr().Is4() || s.Bits() != 24 {
			return fmt.Errorf("kubebed: Subnet %q: want an IPv4 /24", o.Subnet)
		}
	}
	return nil
}

func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.Nodes == 0 {
		o.Nodes = d.Nodes
	}
	if o.CNI == "" {
		o.CNI = d.CNI
	}
	if o.ClusterCIDR == "" {
		o.ClusterCIDR = d.ClusterCIDR
	}
	if o.KubeletVerbosity == 0 {
		o.KubeletVerbosity = d.KubeletVerbosity
	}
	if o.Timeout == 0 {
		o.Timeout = d.Timeout
	}
	return o
}

// Host is a network namespace on the switch that runs no kubelet: the
// control plane or the plain machine.
type Host struct {
	NetNS string     // network namespace name
	IP    netip.Addr // address on the switch
}

// NetNSPath returns the path of the host's network namespace.
func (h Host) NetNSPath() string { return testutil.NetNSPath(h.NetNS) }

// Node is one kubelet node.
type Node struct {
	Name       string       // Node name and hostname: n1, n2, ...
	IP         netip.Addr   // InternalIP, on the switch
	NetNS      string       // network namespace name
	MountNS    string       // path of its mount namespace (bind of nsfs)
	Dir        string       // state: containerd, kubelet, overlay upper dirs, sysctl files
	CgroupRoot string       // the kubelet's cgroupRoot, e.g. /kb3f2a-n1, in every hierarchy
	PodCIDR    netip.Prefix // CNIBridge: its pod range; invalid with CNINone
	// ContainerdSock is its containerd's socket (reachable from the machine).
	ContainerdSock string
	// Kubeconfig is the kubelet's and kube-proxy's kubeconfig.
	Kubeconfig string

	mntIno  uint64 // inode of MountNS, to find its processes
	mu      sync.Mutex
	stopped bool // guarded by mu: StopNode ran
}

// NetNSPath returns the path of the node's network namespace.
func (n *Node) NetNSPath() string { return testutil.NetNSPath(n.NetNS) }

// Cluster is a running cluster. Its methods may be called from any
// goroutine; they return errors rather than fail the test.
type Cluster struct {
	Prefix       string       // unique per run, e.g. kb3f2a: namespaces, links, cgroups
	Dir          string       // scratch directory (short path: sockets live in it)
	LogDir       string       // every daemon's log, <name>.log (in t.TempDir)
	Subnet       netip.Prefix // the switch's network
	ClusterCIDR  netip.Prefix
	ServiceCIDR  netip.Prefix
	Switch       string // switch network namespace name
	ControlPlane Host
	Plain        Host    // a machine on the switch that is not in the cluster
	Nodes        []*Node // n1..nN
	// Kubeconfig is the admin kubeconfig (a static token in system:masters).
	// Its server address is reachable only from the cluster's network
	// namespaces: use it with nsenter --net=ControlPlane.NetNSPath().
	Kubeconfig string
	// PauseTar and TestboxTar are the tarballs of PauseImage and
	// TestboxImage; TestboxBin is the testbox binary itself (static: it runs
	// on the machine too, e.g. PlainExec(c.TestboxBin, "get", url)).
	PauseTar, TestboxTar, TestboxBin string

	opts    Options
	t       testing.TB
	bin     string // Kubernetes binaries
	pki     *pki
	rest    *rest.Config
	client  kubernetes.Interface
	dyn     dynamic.Interface
	mapper  *restmapper.DeferredDiscoveryRESTMapper
	spawner *spawner
	state   *runState

	mu         sync.Mutex // guards following
	daemons    []*daemon
	stopped    bool
	stopPhases string // how long each teardown phase took
	// startPhases: when each step of Start ended (written by one goroutine
	// at a time: the control plane's before g.Wait, the rest after).
	startPhases []string
}

// Start brings up a cluster (see the package doc) and registers its
// teardown with t.Cleanup. It skips the test when not root. It installs
// what is missing first (scripts/deps-kube.sh, scripts/kube-build.sh), and
// fails the test when anything does not come up.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	testutil.Root(t, "go")
	opts = opts.withDefaults()
	if err := opts.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := installDeps(); err != nil {
		t.Fatal(err)
	}
	bin, err := kubeBinaries(t)
	if err != nil {
		t.Fatal(err)
	}
	unlock := lockMachine(t)
	t.Cleanup(unlock) // runs last, after the namespaces are gone
	if err := reapStaleRun(t.Logf); err != nil {
		t.Fatalf("kubebed: cleaning up after an earlier run: %v", err)
	}
	subnet, err := pickSubnet(opts.Subnet)
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{
		Prefix:      testutil.Prefix("kb"),
		LogDir:      t.TempDir(),
		Subnet:      subnet,
		ClusterCIDR: netip.MustParsePrefix(opts.ClusterCIDR),
		ServiceCIDR: netip.MustParsePrefix(ServiceCIDR),
		opts:        opts,
		t:           t,
		bin:         bin,
	}
	tmp := os.TempDir()
	if len(tmp) > 40 { // unix socket paths in Dir must stay under 108 bytes
		tmp = "/tmp"
	}
	if c.Dir, err = os.MkdirTemp(tmp, c.Prefix+"-"); err != nil {
		t.Fatal(err)
	}
	c.Kubeconfig = filepath.Join(c.Dir, "admin.kubeconfig")
	c.layout()
	c.state = newRunState(c)
	if err := c.state.save(); err != nil {
		t.Fatal(err)
	}
	c.spawner = newSpawner()
	c.createNamespaces(t) // testutil.NetNS: deleted by their own cleanups if teardown has not
	c.state.recordNetNSInodes()
	t.Cleanup(func() { c.teardown(t) })

	started := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), opts.Timeout)
	defer cancel()
	if err := c.start(ctx); err != nil {
		t.Fatalf("kubebed: start after %v: %v", time.Since(started).Round(time.Millisecond), err)
	}
	t.Logf("kubebed: %s up in %v (%s): %d nodes on %s, CNI %s, logs in %s", c.Prefix,
		time.Since(started).Round(time.Millisecond), strings.Join(c.startPhases, ", "), len(c.Nodes), c.Subnet, opts.CNI, c.LogDir)
	return c
}

// layout names every node and host.
func (c *Cluster) layout() {
	c.Switch = c.Prefix + "-sw"
	c.ControlPlane = Host{NetNS: c.Prefix + "-cp", IP: c.hostIP(10)}
	c.Plain = Host{NetNS: c.Prefix + "-plain", IP: c.hostIP(200)}
	for i := 1; i <= c.opts.Nodes; i++ {
		n := &Node{
			Name:       fmt.Sprintf("n%d", i),
			IP:         c.hostIP(10 + i),
			NetNS:      fmt.Sprintf("%s-n%d", c.Prefix, i),
			MountNS:    filepath.Join(c.Dir, "ns", fmt.Sprintf("n%d", i)),
			Dir:        filepath.Join(c.Dir, fmt.Sprintf("n%d", i)),
			CgroupRoot: fmt.Sprintf("/%s-n%d", c.Prefix, i),
		}
		n.ContainerdSock = filepath.Join(n.Dir, "containerd.sock")
		n.Kubeconfig = filepath.Join(n.Dir, "kubeconfig")
		if c.opts.CNI == CNIBridge {
			n.PodCIDR = nthSlash24(c.ClusterCIDR, i)
		}
		c.Nodes = append(c.Nodes, n)
	}
}

func (c *Cluster) hostIP(last int) netip.Addr {
	a := c.Subnet.Addr().As4()
	a[3] = byte(last)
	return netip.AddrFrom4(a)
}

// nthSlash24 returns the i-th /24 of p.
func nthSlash24(p netip.Prefix, i int) netip.Prefix {
	a := p.Masked().Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8
	v += uint32(i) << 8
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), 0}), 24)
}

func (c *Cluster) start(ctx context.Context) error {
	t0 := time.Now()
	if err := c.wireNetwork(); err != nil {
		return err
	}
	if err := c.privateNSDir(); err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	var images sync.WaitGroup // the nodes' containerd import them
	var imgErr error
	images.Add(1)
	go func() {
		defer images.Done()
		imgErr = c.buildTestImages(gctx)
	}()
	// Never leave a build writing into a directory the teardown removes
	// (on an error, gctx is canceled and the build ends at once).
	defer images.Wait()
	apiUp := make(chan struct{}) // closed when kube-apiserver is ready
	g.Go(func() error {
		if err := c.startControlPlane(gctx, apiUp); err != nil {
			return err
		}
		c.startPhases = append(c.startPhases, fmt.Sprintf("control plane %v", time.Since(t0).Round(time.Millisecond)))
		return nil
	})
	for _, n := range c.Nodes {
		g.Go(func() error {
			if err := c.startRuntime(gctx, n); err != nil {
				return err
			}
			images.Wait()
			if imgErr != nil {
				return imgErr
			}
			tars := append([]string{c.PauseTar, c.TestboxTar}, c.opts.Images...)
			for _, tar := range tars {
				if err := c.importImage(gctx, n, tar); err != nil {
					return err
				}
			}
			select {
			case <-apiUp:
			case <-gctx.Done():
				return gctx.Err()
			}
			return c.startKubelet(gctx, n)
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	c.startPhases = append(c.startPhases, fmt.Sprintf("kubelets started %v", time.Since(t0).Round(time.Millisecond)))
	if err := c.waitControllers(ctx); err != nil {
		return err
	}
	if err := c.waitNodesRegistered(ctx); err != nil {
		return err
	}
	c.startPhases = append(c.startPhases, fmt.Sprintf("nodes registered %v", time.Since(t0).Round(time.Millisecond)))
	if c.opts.CNI == CNIBridge {
		if err := c.WaitNodesReady(time.Until(deadline(ctx))); err != nil {
			return err
		}
		c.startPhases = append(c.startPhases, fmt.Sprintf("nodes Ready %v", time.Since(t0).Round(time.Millisecond)))
	}
	return nil
}

func deadline(ctx context.Context) time.Time {
	d, ok := ctx.Deadline()
	if !ok {
		return time.Now().Add(5 * time.Minute)
	}
	return d
}

// Node returns the node named name, or nil.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// node returns the node named name or an error naming the known ones.
func (c *Cluster) node(name string) (*Node, error) {
	if n := c.Node(name); n != nil {
		return n, nil
	}
	return nil, fmt.Errorf("kubebed: no node %q (have n1..n%d)", name, len(c.Nodes))
}
