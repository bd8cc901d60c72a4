package kube_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/api/client"
	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/test/kubebed"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The upstream netpol e2e model, TCP only: namespaces x, y, z (label
// ns=x ...) with pods a, b, c (label pod=a ...), a on n1, b on n2, c on
// n3, each serving HTTP on 80 and 81 in two containers whose ports are
// named serve-80-tcp and serve-81-tcp. The probe matrix of each case is
// compared with the truth table the case states.

var (
	modelNS   = []string{"x", "y", "z"}
	modelPods = []string{"a", "b", "c"}
	podNode   = map[string]string{"a": "n1", "b": "n2", "c": "n3"}
)

// modelPod is one pod of the model: ns is the label (x), space the real
// namespace (prefix-x).
type modelPod struct {
	ns, space, name, ip, node string
}

func (p modelPod) String() string { return p.ns + "/" + p.name }

func modelManifest(prefix string) string {
	var b strings.Builder
	for _, ns := range modelNS {
		fmt.Fprintf(&b, "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: %s-%s, labels: {ns: \"%s\"}}\n", prefix, ns, ns)
		for _, p := range modelPods {
			fmt.Fprintf(&b, `---
apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s-%s, labels: {pod: "%s"}}
spec:
  nodeName: %s
  automountServiceAccountToken: false
  enableServiceLinks: false
  terminationGracePeriodSeconds: 1
  containers:
    - {name: serve-80, image: %s, imagePullPolicy: Never, args: [serve, -addr, ":80"], ports: [{name: serve-80-tcp, containerPort: 80}]}
    - {name: serve-81, image: %s, imagePullPolicy: Never, args: [serve, -addr, ":81"], ports: [{name: serve-81-tcp, containerPort: 81}]}
`, p, prefix, ns, p, podNode[p], kubebed.TestboxImage, kubebed.TestboxImage)
		}
	}
	return b.String()
}

// truth says whether from may reach to on port.
type truth func(from, to modelPod, port int) bool

// probeMatrix probes every pair on port (8 at a time; a denied probe
// waits out its 1 s timeout) and returns the pairs that differ from want.
func probeMatrix(c *kubebed.Cluster, pods []modelPod, port int, want truth) []string {
	type job struct{ from, to modelPod }
	jobs := make(chan job)
	var mu sync.Mutex
	var wrong []string
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for j := range jobs {
				_, err := c.PodExec(j.from.space, j.from.name, "/testbox", "get", "-t", "1s", fmt.Sprintf("http://%s:%d/", j.to.ip, port))
				got, exp := err == nil, want(j.from, j.to, port)
				if got != exp {
					mu.Lock()
					wrong = append(wrong, fmt.Sprintf("%v → %v :%d reached=%v want %v", j.from, j.to, port, got, exp))
					mu.Unlock()
				}
			}
		})
	}
	for _, from := range pods {
		for _, to := range pods {
			if from != to {
				jobs <- job{from, to}
			}
		}
	}
	close(jobs)
	wg.Wait()
	slices.Sort(wrong)
	return wrong
}

// checkMatrix probes until the matrix equals want (policies take effect
// within a pass, but an informer event is asynchronous).
func checkMatrix(t *testing.T, c *kubebed.Cluster, pods []modelPod, port int, what string, want truth) {
	t.Helper()
	start := time.Now()
	var wrong []string
	if testutil.Poll(20*time.Second, func() error {
		if wrong = probeMatrix(c, pods, port, want); len(wrong) > 0 {
			return errors.New("differs")
		}
		return nil
	}) == nil {
		t.Logf("%s: the %d×%d probe matrix on port %d matches (%v)", what, len(pods), len(pods)-1, port, time.Since(start).Round(time.Millisecond))
		return
	}
	t.Errorf("%s: %d probes differ from the truth table on port %d:\n  %s", what, len(wrong), port, strings.Join(wrong, "\n  "))
}

func netpol(space, name string, spec networkingv1.NetworkPolicySpec) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: space, Name: name}, Spec: spec}
}

// weftCLI runs weft with args on node and decodes its --json answer.
func weftCLI(c *kubebed.Cluster, b bins, node string, out any, args ...string) error {
	argv := append([]string{b.weft, "--socket", "/run/weft/weft.sock"}, args...)
	text, err := c.NodeExec(node, append(argv, "--json")...)
	if err != nil {
		return fmt.Errorf("weft %s on %s: %w: %s", strings.Join(args, " "), node, err, text)
	}
	i := strings.IndexAny(text, "[{")
	if i < 0 {
		return fmt.Errorf("weft %s on %s: no JSON in %q", strings.Join(args, " "), node, text)
	}
	return json.Unmarshal([]byte(text[i:]), out)
}

func TestPolicy(t *testing.T) {
	testutil.Root(t, "nsenter", "etcd", "containerd", "runc", "nft")
	b := buildWeft(t)
	c := kubebed.Start(t, kubebed.Options{Nodes: 3, CNI: kubebed.CNINone, ClusterCIDR: podRange, Images: []string{b.image}})
	ctx := t.Context()
	cs := c.Client()
	installWeft(t, c, readManifest(t))

	prefix := testutil.Prefix("np")
	space := func(ns string) string { return prefix + "-" + ns }
	if err := c.Apply(modelManifest(prefix)); err != nil {
		t.Fatal(err)
	}
	var pods []modelPod
	for _, ns := range modelNS {
		ready, err := c.WaitPodsReady(space(ns), "", len(modelPods), 3*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ready {
			pods = append(pods, modelPod{ns: ns, space: space(ns), name: p.Name, ip: p.Status.PodIP, node: p.Spec.NodeName})
		}
	}
	slices.SortFunc(pods, func(a, b modelPod) int { return strings.Compare(a.String(), b.String()) })
	find := func(s string) modelPod {
		for _, p := range pods {
			if p.String() == s {
				return p
			}
		}
		t.Fatalf("no pod %s", s)
		return modelPod{}
	}
	policies := cs.NetworkingV1().NetworkPolicies(space("x"))
	create := func(np *networkingv1.NetworkPolicy) {
		t.Helper()
		if _, err := policies.Create(ctx, np, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	remove := func(name string) {
		t.Helper()
		if err := policies.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("no policy: everyone reaches everyone", func(t *testing.T) {
		checkMatrix(t, c, pods, 80, "no policy", func(from, to modelPod, port int) bool { return true })
	})

	// Default deny of ingress in x.
	create(netpol(space("x"), "deny-all", networkingv1.NetworkPolicySpec{
		PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}))
	t.Run("default deny ingress in x", func(t *testing.T) {
		checkMatrix(t, c, pods, 80, "x/deny-all", func(from, to modelPod, port int) bool { return to.ns != "x" })
		// The node still probes its pods (kubelet probes come from there).
		xa := find("x/a")
		if _, err := c.NodeExec(xa.node, c.TestboxBin, "get", "-t", "2s", "http://"+xa.ip+":80/"); err != nil {
			t.Errorf("node %s → x/a under deny-all: %v; want reached (traffic from the pod's own node is allowed)", xa.node, err)
		}
		var st client.Status
		if err := weftCLI(c, b, xa.node, &st, "status"); err != nil {
			t.Fatal(err)
		}
		if p := st.Policy; !p.Enabled || !p.Synced || p.Policies != 1 || p.Pods < len(pods) || p.Isolated < 1 {
			t.Errorf("status policy on %s = %+v; want enabled, synced, 1 policy, >= %d pods, x/a isolated", xa.node, p, len(pods))
		}
		var ex client.Explanation
		if err := weftCLI(c, b, xa.node, &ex, "policy", "explain", space("y")+"/b", xa.ip, "80/TCP"); err != nil {
			t.Fatal(err)
		}
		if ex.Allowed || ex.Ingress.Reason != "default-deny" || !slices.Contains(ex.Ingress.Selected, space("x")+"/deny-all") {
			t.Errorf("weft policy explain y/b x/a 80/TCP = %+v; want denied by the default deny of %s/deny-all", ex, space("x"))
		}
		testutil.Eventually(t, 15*time.Second, "weft policy drops on "+xa.node+" to name x/deny-all", func() error {
			var drops []client.PolicyDrop
			if err := weftCLI(c, b, xa.node, &drops, "policy", "drops"); err != nil {
				return err
			}
			for _, d := range drops {
				if d.Direction == "ingress" && d.DstName == space("x")+"/a" && d.Port == 80 &&
					slices.Contains(d.Policies, space("x")+"/deny-all") && strings.HasPrefix(d.SrcName, prefix+"-") {
					return nil
				}
			}
			return fmt.Errorf("drops %+v", drops)
		})
	})

	// A pod created under the default deny is never reachable.
	t.Run("a new pod under default deny is isolated from its first packet", func(t *testing.T) {
		d := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "d", Namespace: space("x"), Labels: map[string]string{"pod": "d"}},
			Spec: corev1.PodSpec{NodeName: "n2", AutomountServiceAccountToken: new(bool), TerminationGracePeriodSeconds: new(int64),
				Containers: []corev1.Container{{Name: "serve", Image: kubebed.TestboxImage, ImagePullPolicy: corev1.PullNever, Args: []string{"serve", "-addr", ":80"}}}}}
		if _, err := cs.CoreV1().Pods(space("x")).Create(ctx, d, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		ready, err := c.WaitPodsReady(space("x"), "pod=d", 1, 2*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.PodExec(space("y"), "b", "/testbox", "get", "-t", "1s", "http://"+ready[0].Status.PodIP+":80/"); err == nil {
			t.Errorf("y/b reached the new pod x/d under deny-all")
		}
		if err := cs.CoreV1().Pods(space("x")).Delete(ctx, "d", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	})

	// Allow ingress to x from namespace y.
	create(netpol(space("x"), "allow-from-y", networkingv1.NetworkPolicySpec{
		PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
			{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"ns": "y"}}}}}}}))
	t.Run("allow from namespace y", func(t *testing.T) {
		checkMatrix(t, c, pods, 80, "x/allow-from-y", func(from, to modelPod, port int) bool { return to.ns != "x" || from.ns == "y" })
		var ex client.Explanation
		xa := find("x/a")
		if err := weftCLI(c, b, xa.node, &ex, "policy", "explain", space("y")+"/c", space("x")+"/a", "80/TCP"); err != nil {
			t.Fatal(err)
		}
		if !ex.Allowed || len(ex.Ingress.Rules) != 1 || ex.Ingress.Rules[0].Policy != space("x")+"/allow-from-y" {
			t.Errorf("weft policy explain y/c x/a 80/TCP = %+v; want allowed by %s/allow-from-y rule 0", ex, space("x"))
		}
	})
	remove("allow-from-y")

	// A named port: x/a allows serve-81-tcp from anyone; 80 stays denied.
	named := intstr.FromString("serve-81-tcp")
	create(netpol(space("x"), "allow-81-named", networkingv1.NetworkPolicySpec{
		PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod": "a"}},
		PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		Ingress:     []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: &named}}}}}))
	t.Run("named port", func(t *testing.T) {
		checkMatrix(t, c, pods, 81, "x/allow-81-named on 81", func(from, to modelPod, port int) bool {
			return to.ns != "x" || to.name == "a"
		})
		checkMatrix(t, c, pods, 80, "x/allow-81-named on 80", func(from, to modelPod, port int) bool { return to.ns != "x" })
	})

	// A long-lived flow is cut: an ICMP echo stream from y/b has one
	// conntrack entry, so without the cut it would outlive a policy that
	// denies it.
	remove("allow-81-named")
	remove("deny-all")
	t.Run("a change cuts an established flow within 5 s", func(t *testing.T) {
		checkMatrix(t, c, pods, 80, "open before the cut", func(from, to modelPod, port int) bool { return true })
		xa := find("x/a")
		type result struct {
			out string
			err error
		}
		done := make(chan result, 1)
		go func() {
			out, err := c.PodExec(space("y"), "b", "/testbox", "ping", "-i", "100ms", "-c", "150", "-W", "1s", xa.ip)
			done <- result{out, err}
		}()
		time.Sleep(3 * time.Second) // replies flow: the entry is established
		create(netpol(space("x"), "deny-all", networkingv1.NetworkPolicySpec{
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}))
		r := <-done
		m := countsRE.FindStringSubmatch(r.out)
		if m == nil {
			t.Fatalf("ping y/b → x/a: %v %q", r.err, r.out)
		}
		received, _ := strconv.Atoi(m[2])
		// At most 3 s before the policy (the exec starts the ping a
		// moment after it is called) plus at most 5 s after it, at 10 a
		// second.
		t.Logf("ping y/b → x/a every 100 ms, deny-all created 3 s after the ping was started: %s (%v of replies in all)",
			m[0], time.Duration(received)*100*time.Millisecond)
		if received < 20 || received > 80 {
			t.Errorf("%d of 150 echo replies; want the stream answered before the policy and cut within 5 s of it (20..80)", received)
		}
	})

	// A restarted peer keeps enforcing: no probe of a denied flow passes
	// while x/a's node runs no peer, or while the new one starts.
	t.Run("a peer restart keeps enforcing", func(t *testing.T) {
		xa := find("x/a")
		peers, err := cs.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: peerSel, FieldSelector: "spec.nodeName=" + xa.node})
		if err != nil || len(peers.Items) != 1 {
			t.Fatalf("weft peer pod on %s: %v %v", xa.node, peers, err)
		}
		old := peers.Items[0].Name
		if err := cs.CoreV1().Pods("kube-system").Delete(ctx, old, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(2 * time.Minute)
		var probes, passed int
		restarted := false
		for time.Now().Before(deadline) {
			if _, err := c.PodExec(space("y"), "b", "/testbox", "get", "-t", "1s", "http://"+xa.ip+":80/"); err == nil {
				passed++
			}
			probes++
			if restarted {
				break
			}
			ready, err := c.WaitPodsReady("kube-system", peerSel, 3, time.Second)
			if err == nil && !slices.ContainsFunc(ready, func(p corev1.Pod) bool { return p.Name == old }) {
				restarted = true // one more probe against the new peer
			}
		}
		t.Logf("%d probes of a denied flow across the restart of %s's peer, %d passed", probes, xa.node, passed)
		if !restarted || passed > 0 {
			t.Errorf("restart of the peer on %s: restarted %v, %d of %d denied probes passed; want 0", xa.node, restarted, passed, probes)
		}
		testutil.Eventually(t, time.Minute, "the new peer on "+xa.node+" to be synced", func() error {
			var st client.Status
			if err := weftCLI(c, b, xa.node, &st, "status"); err != nil {
				return err
			}
			if !st.Policy.Synced || st.Policy.Policies != 1 {
				return fmt.Errorf("policy %+v", st.Policy)
			}
			return nil
		})
		checkMatrix(t, c, pods, 80, "deny-all after the restart", func(from, to modelPod, port int) bool { return to.ns != "x" })
	})

	// Everything removed: open again.
	remove("deny-all")
	t.Run("policies removed: open again", func(t *testing.T) {
		checkMatrix(t, c, pods, 80, "no policy again", func(from, to modelPod, port int) bool { return true })
	})
}
