package kube_test

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/api/client"
	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/test/kubebed"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

const (
	weftImage   = "docker.io/weftmesh/weft:latest" // what deploy/weft.yaml runs
	podRange    = "10.32.0.0/12"                   // weft's default range: kube-proxy's --cluster-cidr
	nodeLocalIP = "169.254.20.10"                  // --dns-local-address in deploy/weft.yaml
	peerSel     = "app.kubernetes.io/name=weft,app.kubernetes.io/component=peer"
)

// bins are the static binaries the test runs: weft and weft-cni (packed
// into the image; weft also runs on the nodes for `weft status` and
// `weft reset`).
type bins struct{ weft, cni, image string }

// buildWeft builds static weft, weft-cni and weft-datapath and packs them
// as `make image` does (internal/cmd/mkimage).
func buildWeft(t *testing.T) bins {
	t.Helper()
	dir := t.TempDir()
	b := bins{weft: filepath.Join(dir, "weft"), cni: filepath.Join(dir, "weft-cni"), image: filepath.Join(dir, "weft-image.tar")}
	run := func(argv ...string) {
		t.Helper()
		cmd := exec.Command("go", argv...)
		cmd.Dir = "../.."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(argv, " "), err, out)
		}
	}
	run("build", "-trimpath", "-o", b.weft, "./cmd/weft")
	run("build", "-trimpath", "-o", b.cni, "./cmd/weft-cni")
	datapath := filepath.Join(dir, "weft-datapath")
	run("build", "-trimpath", "-o", datapath, "./cmd/weft-datapath")
	run("run", "./internal/cmd/mkimage", "-o", b.image, "-tag", weftImage, b.weft, b.cni, datapath)
	return b
}

// dumpWeftLogsOnFailure logs, if the test fails, the last lines of every
// weft pod's containers (peer and datapath), before the cluster is torn
// down: the cluster's own logs are its daemons', not the pods'.
func dumpWeftLogsOnFailure(t *testing.T, c *kubebed.Cluster) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // t.Context() is done by now
		defer cancel()
		pods, err := c.Client().CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=weft"})
		if err != nil {
			t.Logf("weft pod logs: %v", err)
			return
		}
		tail := int64(400)
		for _, p := range pods.Items {
			for _, ct := range p.Spec.Containers {
				b, err := c.Client().CoreV1().Pods("kube-system").GetLogs(p.Name, &corev1.PodLogOptions{Container: ct.Name, TailLines: &tail}).DoRaw(ctx)
				if err != nil {
					t.Logf("==== pod %s (%s) container %s: %v", p.Name, p.Spec.NodeName, ct.Name, err)
					continue
				}
				t.Logf("==== pod %s (%s) container %s, last lines:\n%s", p.Name, p.Spec.NodeName, ct.Name, b)
			}
		}
	})
}

func readManifest(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../deploy/weft.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// weftStatus runs `weft status --json` on node (the socket is the
// DaemonSet's host path, inside the node's mount namespace).
func weftStatus(c *kubebed.Cluster, b bins, node string) (*client.Status, error) {
	var st client.Status
	if err := weftCLI(c, b, node, &st, "status"); err != nil {
		return nil, err
	}
	return &st, nil
}

func TestKubernetes(t *testing.T) {
	testutil.Root(t, "nsenter", "etcd", "containerd", "runc", "nft")
	b := buildWeft(t)
	c := kubebed.Start(t, kubebed.Options{Nodes: 3, CNI: kubebed.CNINone, ClusterCIDR: podRange, Images: []string{b.image}})
	ctx := t.Context()
	cs := c.Client()
	dumpWeftLogsOnFailure(t, c)
	manifest := readManifest(t)

	// 1. NotReady before weft; one apply makes all 3 Ready with a weft pod
	// Running on each, in secure mode.
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes.Items {
		if nodeReady(&n) {
			t.Fatalf("node %s is Ready before weft is installed", n.Name)
		}
	}
	ready := installWeft(t, c, manifest)
	t.Logf("all 3 nodes Ready %v after kubectl apply", ready.Round(time.Millisecond))
	for _, n := range []string{"n1", "n2", "n3"} {
		testutil.Eventually(t, time.Minute, n+" to see 3 peers alive over WireGuard", func() error {
			st, err := weftStatus(c, b, n)
			if err != nil {
				return err
			}
			if st.Name != n || st.Transport != "wireguard" {
				return fmt.Errorf("peer %q transport %q", st.Name, st.Transport)
			}
			alive := 0
			for _, p := range st.Peers {
				if p.State == "alive" {
					alive++
				}
			}
			if alive != 3 || st.IPAM.Status != "ready" {
				return fmt.Errorf("%d alive, ipam %q", alive, st.IPAM.Status)
			}
			return nil
		})
	}
	for _, n := range nodes.Items {
		testutil.Eventually(t, 30*time.Second, n.Name+" NetworkUnavailable=False", func() error {
			got, err := cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			for _, cond := range got.Status.Conditions {
				if cond.Type == corev1.NodeNetworkUnavailable && cond.Status == corev1.ConditionFalse {
					return nil
				}
			}
			return fmt.Errorf("conditions %v", got.Status.Conditions)
		})
	}

	// 2. Pods, Services, DNS, NodePort, masquerade.
	if err := c.Apply(workloads); err != nil {
		t.Fatal(err)
	}
	pods, err := c.WaitPodsReady("default", "app=web", 6, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	perNode := map[string]int{}
	for _, p := range pods {
		perNode[p.Spec.NodeName]++
	}
	if len(perNode) != 3 {
		t.Fatalf("6 replicas on %v; want them spread over 3 nodes", perNode)
	}
	// A pod is Ready once its own node has wired it; the other nodes route
	// to it once gossip has told them its node's range (a range donated for
	// it moments before may be a second away, and until then the pod range's
	// unreachable route answers at once). So each pair is given a little
	// time to connect; what it then sees is asserted once.
	t.Run("pod to pod by IP, source kept", func(t *testing.T) {
		for _, from := range pods {
			for _, to := range pods {
				if from.Name == to.Name {
					continue
				}
				var out string
				testutil.Eventually(t, 30*time.Second, fmt.Sprintf("%s (%s) to reach %s (%s)", from.Name, from.Spec.NodeName, to.Name, to.Spec.NodeName), func() error {
					var err error
					out, err = c.PodExec("default", from.Name, "/testbox", "get", "http://"+to.Status.PodIP+":8080/")
					return err
				})
				if seen := fromAddr(out); seen != from.Status.PodIP {
					t.Errorf("%s -> %s: the server saw %q; want the client's pod IP %s (no NAT between pods)", from.Name, to.Name, seen, from.Status.PodIP)
				}
			}
		}
	})
	svc, err := cs.CoreV1().Services("default").Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("ClusterIP service and the API server", func(t *testing.T) {
		for _, from := range pods {
			testutil.Eventually(t, 30*time.Second, from.Name+" to reach the web Service", func() error {
				_, err := c.PodExec("default", from.Name, "/testbox", "get", "http://"+svc.Spec.ClusterIP+"/")
				return err
			})
			// kubernetes.default: the Service in front of the API server.
			out, err := c.PodExec("default", from.Name, "/testbox", "get", "-k", "https://10.96.0.1:443/version")
			if err != nil || !strings.Contains(out, "gitVersion") {
				t.Errorf("%s -> kubernetes.default (10.96.0.1:443): %v %.200s", from.Name, err, out)
			}
		}
	})
	t.Run("every node reaches every pod", func(t *testing.T) {
		for _, n := range []string{"n1", "n2", "n3"} {
			for _, p := range pods {
				testutil.Eventually(t, 30*time.Second, fmt.Sprintf("node %s to reach pod %s on %s", n, p.Name, p.Spec.NodeName), func() error {
					_, err := c.NodeExec(n, c.TestboxBin, "get", "http://"+p.Status.PodIP+":8080/")
					return err
				})
			}
		}
	})
	t.Run("pod names on the node-local DNS address", func(t *testing.T) {
		dnsPod, err := c.WaitPodsReady("default", "app=dnsclient", 1, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		resolv, err := c.PodExec("default", dnsPod[0].Name, "/testbox", "cat", "/etc/resolv.conf")
		if err != nil || !strings.Contains(resolv, nodeLocalIP) {
			t.Fatalf("dnsConfig pod's resolv.conf = %q, %v; want nameserver %s", resolv, err, nodeLocalIP)
		}
		for _, p := range pods {
			if p.Spec.NodeName == dnsPod[0].Spec.NodeName {
				continue
			}
			name := p.Name + ".default.weft.local"
			testutil.Eventually(t, 30*time.Second, "the DNS pod to resolve "+name, func() error {
				out, err := c.PodExec("default", dnsPod[0].Name, "/testbox", "lookup", name, nodeLocalIP+":53")
				if err != nil {
					return err
				}
				if strings.TrimSpace(out) != p.Status.PodIP {
					return fmt.Errorf("%s = %q; want %s", name, out, p.Status.PodIP)
				}
				return nil
			})
		}
	})
	t.Run("NodePort from a machine outside the cluster, through every node", func(t *testing.T) {
		np, err := cs.CoreV1().Services("default").Get(ctx, "np", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.WaitPodsReady("default", "app=np", 1, time.Minute); err != nil {
			t.Fatal(err)
		}
		port := strconv.Itoa(int(np.Spec.Ports[0].NodePort))
		for _, n := range c.Nodes {
			testutil.Eventually(t, 30*time.Second, "the plain machine to reach the NodePort through "+n.Name, func() error {
				_, err := c.PlainExec(c.TestboxBin, "get", "-t", "3s", "http://"+n.IP.String()+":"+port+"/")
				return err
			})
		}
	})
	t.Run("egress to the LAN is masqueraded to the node's address", func(t *testing.T) {
		if err := c.SpawnPlain("web", c.TestboxBin, "serve", "-addr", ":8080"); err != nil {
			t.Fatal(err)
		}
		for _, p := range pods {
			var out string
			testutil.Eventually(t, 30*time.Second, p.Name+" to reach the plain machine", func() error {
				var err error
				out, err = c.PodExec("default", p.Name, "/testbox", "get", "-t", "3s", "http://"+c.Plain.IP.String()+":8080/")
				return err
			})
			if seen := fromAddr(out); seen != c.Node(p.Spec.NodeName).IP.String() {
				t.Errorf("%s on %s -> plain machine: it saw %q; want the node's address %s", p.Name, p.Spec.NodeName, seen, c.Node(p.Spec.NodeName).IP)
			}
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	// 3. A rolling restart of weft under a 10 ms ping across nodes.
	t.Run("rollout restart ds/weft cuts less than 1 s", func(t *testing.T) {
		src, dst := pods[0], pods[0]
		for _, p := range pods {
			if p.Spec.NodeName != src.Spec.NodeName {
				dst = p
				break
			}
		}
		before := allocated(t, c, b)
		// The ping runs until the pod is deleted (the uninstall below); its
		// counts are rewritten every 100 ms into a file read after the
		// rollout, however long the rollout takes.
		const counts = "/ping.counts"
		go func() {
			_, _ = c.PodExec("default", src.Name, "/testbox", "ping", "-i", "10ms", "-c", "0", "-W", "1s", "-o", counts, dst.Status.PodIP)
		}()
		testutil.Eventually(t, 30*time.Second, "the ping to start", func() error {
			_, err := c.PodExec("default", src.Name, "/testbox", "cat", counts)
			return err
		})
		time.Sleep(2 * time.Second) // the ping's baseline before the restart
		restarted := time.Now()
		patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":%q}}}}}`, restarted.Format(time.RFC3339))
		if _, err := cs.AppsV1().DaemonSets("kube-system").Patch(ctx, "weft", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 5*time.Minute, "the rollout to finish", func() error {
			ds, err := cs.AppsV1().DaemonSets("kube-system").Get(ctx, "weft", metav1.GetOptions{})
			if err != nil {
				return err
			}
			return rolledOut(ds)
		})
		t.Logf("rollout restart of ds/weft finished %v after it began", time.Since(restarted).Round(time.Millisecond))
		time.Sleep(2 * time.Second) // the ping's tail after the rollout
		out, err := c.PodExec("default", src.Name, "/testbox", "cat", counts)
		if err != nil {
			t.Fatalf("ping counts: %v", err)
		}
		sent, lost, maxgap := pingCounts(t, out)
		t.Logf("ping %s (%s) -> %s (%s) every 10 ms across the rollout: %d sent, %d lost, longest gap %v",
			src.Name, src.Spec.NodeName, dst.Name, dst.Spec.NodeName, sent, lost, maxgap)
		if time.Duration(lost)*10*time.Millisecond >= time.Second || maxgap >= time.Second {
			t.Errorf("the rollout cut pod traffic for %d pings (longest gap %v); want less than 1 s", lost, maxgap)
		}
		if after := allocated(t, c, b); !maps.Equal(before, after) {
			t.Errorf("allocations per node: %v before the rollout, %v after", before, after)
		}
		now, err := c.WaitPodsReady("default", "app=web", 6, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		ips := map[string]string{}
		for _, p := range pods {
			ips[p.Name] = p.Status.PodIP
		}
		for _, p := range now {
			if ips[p.Name] != p.Status.PodIP {
				t.Errorf("pod %s had %s before the rollout and %s after", p.Name, ips[p.Name], p.Status.PodIP)
			}
		}
		// A new pod gets a fresh address.
		scale(t, c, "web", 7)
		grown, err := c.WaitPodsReady("default", "app=web", 7, 2*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]string{}
		for _, p := range grown {
			if other, dup := seen[p.Status.PodIP]; dup {
				t.Errorf("pods %s and %s share %s", other, p.Name, p.Status.PodIP)
			}
			seen[p.Status.PodIP] = p.Name
		}
		scale(t, c, "web", 6)
	})

	// 4. Node n3 switched off and deleted: its space is reclaimed.
	t.Run("a deleted node's space is reclaimed", func(t *testing.T) {
		st, err := weftStatus(c, b, "n1")
		if err != nil {
			t.Fatal(err)
		}
		n3Owned := ownedBy(st, "n3")
		if n3Owned == 0 {
			t.Fatalf("n3 owns no space before it is stopped: %+v", st.IPAM.Owners)
		}
		if err := c.StopNode("n3"); err != nil {
			t.Fatal(err)
		}
		if err := cs.CoreV1().Nodes().Delete(ctx, "n3", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		deleted := time.Now()
		for _, n := range []string{"n1", "n2"} {
			testutil.Eventually(t, 60*time.Second, n+" to see n3's space reclaimed", func() error {
				st, err := weftStatus(c, b, n)
				if err != nil {
					return err
				}
				if o := ownedBy(st, "n3"); o != 0 {
					return fmt.Errorf("n3 still owns %d addresses", o)
				}
				if o := ownedBy(st, "n1") + ownedBy(st, "n2"); o < int64(1)<<20 {
					return fmt.Errorf("n1 and n2 own %d addresses of %d", o, 1<<20)
				}
				return nil
			})
		}
		took := time.Since(deleted)
		t.Logf("n3's %d addresses reclaimed by the others %v after its Node was deleted", n3Owned, took.Round(time.Millisecond))
		if took > 30*time.Second {
			t.Errorf("reclaim took %v; want within 30 s", took)
		}
		// The Deployment's pods of n3 come back on n1 and n2 (podgc, or
		// force-deleted here as an operator would) with fresh addresses.
		if err := cs.CoreV1().Pods("default").DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: new(int64)},
			metav1.ListOptions{FieldSelector: "spec.nodeName=n3"}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.WaitPodsReady("default", "app=web", 6, 2*time.Minute); err != nil {
			t.Fatal(err)
		}
	})

	// 5. Uninstall, then `weft reset` on each node leaves nothing.
	t.Run("uninstall and weft reset leave nothing", func(t *testing.T) {
		if err := c.Delete(workloads); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 2*time.Minute, "the workloads' pods to go", func() error {
			l, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
			if err != nil || len(l.Items) > 0 {
				return fmt.Errorf("%d pods left, %v", len(l.Items), err)
			}
			return nil
		})
		if err := c.Delete(manifest); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 2*time.Minute, "weft's pods to go", func() error {
			l, err := cs.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=weft"})
			if err != nil || len(l.Items) > 0 {
				return fmt.Errorf("%d pods left, %v", len(l.Items), err)
			}
			return nil
		})
		for _, n := range []string{"n1", "n2", "n3"} {
			if out, err := c.NodeExec(n, b.weft, "reset"); err != nil {
				t.Errorf("weft reset on %s: %v: %s", n, err, out)
			}
			checkNothingLeft(t, c, n)
		}
	})

	// 6. The cluster goes, leaving nothing on the machine.
	if err := c.Stop(); err != nil {
		t.Errorf("teardown: %v", err)
	}
	if left := c.Leftovers(); len(left) > 0 {
		t.Errorf("left behind after teardown: %q", left)
	}
}

// workloads: 6 spread web servers behind a ClusterIP Service, one NodePort
// backend pinned to n1 (so n2 and n3 forward NodePort traffic through the
// mesh), and a pod whose resolver is the node-local DNS address.
const workloads = `
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 6
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      automountServiceAccountToken: false
      enableServiceLinks: false
      terminationGracePeriodSeconds: 2
      topologySpreadConstraints:
        - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: web}}}
      containers:
        - {name: web, image: ` + kubebed.TestboxImage + `, imagePullPolicy: Never, args: [serve]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: np, namespace: default, labels: {app: np}}
spec:
  nodeName: n1
  automountServiceAccountToken: false
  enableServiceLinks: false
  terminationGracePeriodSeconds: 2
  containers:
    - {name: web, image: ` + kubebed.TestboxImage + `, imagePullPolicy: Never, args: [serve]}
---
apiVersion: v1
kind: Service
metadata: {name: np, namespace: default}
spec:
  type: NodePort
  selector: {app: np}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: dnsclient, namespace: default, labels: {app: dnsclient}}
spec:
  nodeName: n2
  automountServiceAccountToken: false
  enableServiceLinks: false
  terminationGracePeriodSeconds: 2
  dnsPolicy: None
  dnsConfig:
    nameservers: [` + nodeLocalIP + `]
    searches: [default.weft.local, weft.local]
  containers:
    - {name: c, image: ` + kubebed.TestboxImage + `, imagePullPolicy: Never, args: [sleep]}
`

// installWeft does what README's install section says: the Secret, then
// kubectl apply -f deploy/weft.yaml (the image is on every node already).
// It returns the time from the apply to every node Ready, once a weft pod
// is ready on each.
func installWeft(t *testing.T, c *kubebed.Cluster, manifest string) time.Duration {
	t.Helper()
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "weft", Namespace: "kube-system"},
		StringData: map[string]string{"password": "kubebed-" + c.Prefix + "-cluster-secret"}}
	if _, err := c.Client().CoreV1().Secrets("kube-system").Create(t.Context(), secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	applied := time.Now()
	if err := c.Apply(manifest); err != nil {
		t.Fatalf("kubectl apply -f deploy/weft.yaml: %v", err)
	}
	if err := c.WaitNodesReady(3 * time.Minute); err != nil {
		t.Fatal(err)
	}
	ready := time.Since(applied)
	if _, err := c.WaitPodsReady("kube-system", peerSel, len(c.Nodes), 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	return ready
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// rolledOut is nil once every pod of ds runs the current template and is
// ready.
func rolledOut(ds *appsv1.DaemonSet) error {
	s := ds.Status
	if s.ObservedGeneration < ds.Generation || s.UpdatedNumberScheduled != s.DesiredNumberScheduled ||
		s.NumberReady != s.DesiredNumberScheduled || s.NumberUnavailable != 0 {
		return fmt.Errorf("generation %d observed %d, updated %d ready %d of %d", ds.Generation, s.ObservedGeneration,
			s.UpdatedNumberScheduled, s.NumberReady, s.DesiredNumberScheduled)
	}
	return nil
}

var fromRE = regexp.MustCompile(`from=(\S+)`)

// fromAddr is the client address a testbox server saw ("host=H from=IP:PORT").
func fromAddr(body string) string {
	m := fromRE.FindStringSubmatch(body)
	if m == nil {
		return ""
	}
	ap, err := netip.ParseAddrPort(m[1])
	if err != nil {
		return m[1]
	}
	return ap.Addr().String()
}

var countsRE = regexp.MustCompile(`sent=(\d+) received=(\d+) lost=(\d+) maxgap=(\S+)`)

func pingCounts(t *testing.T, out string) (sent, lost int, maxgap time.Duration) {
	t.Helper()
	m := countsRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no counts in the ping's output: %q", out)
	}
	sent, _ = strconv.Atoi(m[1])
	lost, _ = strconv.Atoi(m[3])
	maxgap, err := time.ParseDuration(m[4])
	if err != nil {
		t.Fatalf("maxgap %q: %v", m[4], err)
	}
	return sent, lost, maxgap
}

// allocated maps node -> the number of addresses its peer has allocated
// (pods and the bridge), from `weft status --json`.
func allocated(t *testing.T, c *kubebed.Cluster, b bins) map[string]int64 {
	t.Helper()
	all := map[string]int64{}
	for _, n := range c.Nodes {
		st, err := weftStatus(c, b, n.Name)
		if err != nil {
			t.Fatal(err)
		}
		all[n.Name] = st.IPAM.Allocated
	}
	return all
}

func ownedBy(st *client.Status, name string) int64 {
	var n int64
	for _, o := range st.IPAM.Owners {
		if o.Name == name {
			n += o.Owned
		}
	}
	return n
}

func scale(t *testing.T, c *kubebed.Cluster, name string, n int32) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"replicas":%d}}`, n)
	if _, err := c.Client().AppsV1().Deployments("default").Patch(t.Context(), name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// checkNothingLeft: no weft link, route into the pod range, nft table or
// CNI file on node n.
func checkNothingLeft(t *testing.T, c *kubebed.Cluster, n string) {
	t.Helper()
	links, _ := c.NodeExec(n, "ip", "-o", "link", "show")
	for _, l := range strings.Split(links, "\n") {
		f := strings.Fields(l)
		if len(f) > 1 && strings.HasPrefix(strings.TrimSuffix(f[1], ":"), "weft") {
			t.Errorf("%s: link left after weft reset: %s", n, l)
		}
	}
	routes, _ := c.NodeExec(n, "ip", "route", "show", "match", podRange)
	for _, r := range strings.Split(strings.TrimSpace(routes), "\n") {
		if r != "" && !strings.HasPrefix(r, "default") {
			t.Errorf("%s: route into the pod range left: %s", n, r)
		}
	}
	tables, _ := c.NodeExec(n, "nft", "list", "tables")
	if strings.Contains(tables, "weft") {
		t.Errorf("%s: nft tables left: %s", n, tables)
	}
	for _, f := range []string{"/etc/cni/net.d/10-weft.conflist", "/opt/cni/bin/weft-cni"} {
		if out, err := c.NodeExec(n, "test", "-e", f); err == nil {
			t.Errorf("%s: %s left after weft reset %s", n, f, out)
		}
	}
}
