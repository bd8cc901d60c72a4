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
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The upstream netpol e2e model: namespaces x, y, z (label ns=x ...) with
// pods a, b, c (label pod=a ...), a on n1, b on n2, c on n3, each serving
// TCP and UDP on 80 and 81 in two containers whose ports are named
// serve-80-tcp, serve-80-udp, serve-81-tcp and serve-81-udp. Every case
// probes the full matrix (9 × 8 pairs × the four port/protocol cells) and
// compares it with the truth table the case states.

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

// is reports whether p is the pod named s ("x/a").
func (p modelPod) is(s string) bool { return p.String() == s }

// cell is one port and protocol of the matrix.
type cell struct {
	port  int
	proto string // tcp or udp
}

func (c cell) String() string { return fmt.Sprintf("%d/%s", c.port, strings.ToUpper(c.proto)) }

var cells = []cell{{80, "tcp"}, {80, "udp"}, {81, "tcp"}, {81, "udp"}}

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
`, p, prefix, ns, p, podNode[p])
			for _, port := range []int{80, 81} {
				fmt.Fprintf(&b, `    - name: serve-%d
      image: %s
      imagePullPolicy: Never
      args: [serve, -addr, ":%d", -udp]
      ports: [{name: serve-%d-tcp, containerPort: %d, protocol: TCP}, {name: serve-%d-udp, containerPort: %d, protocol: UDP}]
`, port, kubebed.TestboxImage, port, port, port, port, port)
			}
		}
	}
	return b.String()
}

// truth says whether from may reach to on c.
type truth func(from, to modelPod, c cell) bool

func target(to modelPod, c cell) string { return fmt.Sprintf("%s://%s:%d", c.proto, to.ip, c.port) }

// probeMatrix probes the whole matrix, one testbox probe per source pod
// (all its targets at once, so a row costs one timeout), all rows at
// once, and returns the cells that differ from want.
func probeMatrix(c *kubebed.Cluster, pods []modelPod, want truth) []string {
	var mu sync.Mutex
	var wrong []string
	var wg sync.WaitGroup
	for _, from := range pods {
		wg.Go(func() {
			argv := []string{"/testbox", "probe", "-t", "1s"}
			for _, to := range pods {
				for _, cl := range cells {
					if to != from {
						argv = append(argv, target(to, cl))
					}
				}
			}
			out, err := c.PodExec(from.space, from.name, argv...)
			got := map[string]bool{}
			for _, l := range strings.Split(out, "\n") {
				if f := strings.Fields(l); len(f) >= 2 {
					got[f[0]] = f[1] == "ok"
				}
			}
			mu.Lock()
			defer mu.Unlock()
			for _, to := range pods {
				for _, cl := range cells {
					if to == from {
						continue
					}
					reached, probed := got[target(to, cl)]
					if err != nil || !probed {
						wrong = append(wrong, fmt.Sprintf("%v → %v %v: not probed: %v", from, to, cl, err))
					} else if exp := want(from, to, cl); reached != exp {
						wrong = append(wrong, fmt.Sprintf("%v → %v %v reached=%v want %v", from, to, cl, reached, exp))
					}
				}
			}
		})
	}
	wg.Wait()
	slices.Sort(wrong)
	return wrong
}

// checkMatrix probes until the matrix equals want (policies take effect
// within a pass, but an informer event is asynchronous).
func checkMatrix(t *testing.T, c *kubebed.Cluster, pods []modelPod, what string, want truth) {
	t.Helper()
	start := time.Now()
	var wrong []string
	if testutil.Poll(20*time.Second, func() error {
		if wrong = probeMatrix(c, pods, want); len(wrong) > 0 {
			return errors.New("differs")
		}
		return nil
	}) == nil {
		t.Logf("%s: the %d×%d probe matrix on %v matches (%v)", what, len(pods), len(pods)-1, cells, time.Since(start).Round(time.Millisecond))
		return
	}
	t.Errorf("%s: %d probes differ from the truth table:\n  %s", what, len(wrong), strings.Join(wrong, "\n  "))
}

// probeUntil probes to from from every 20 ms (attempts of 200 ms) until
// the result is want ("ok" or "fail"), and returns how long that took
// from start.
func probeUntil(c *kubebed.Cluster, from, to modelPod, cl cell, want string, start time.Time) (time.Duration, error) {
	out, err := c.PodExec(from.space, from.name, "/testbox", "probe", "-t", "200ms", "-until", "10s", "-want", want, target(to, cl))
	took := time.Since(start)
	if err != nil {
		return took, err
	}
	if f := strings.Fields(out); len(f) < 3 || f[2] != want {
		return took, fmt.Errorf("%v → %v %v: %q after 10 s; want %s", from, to, cl, strings.TrimSpace(out), want)
	}
	return took, nil
}

func all(modelPod, modelPod, cell) bool { return true }

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

// Selectors and ports of the cases.
func labels(kv ...string) *metav1.LabelSelector {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return &metav1.LabelSelector{MatchLabels: m}
}

func npPort(proto corev1.Protocol, port intstr.IntOrString, end int32) networkingv1.NetworkPolicyPort {
	p := networkingv1.NetworkPolicyPort{Protocol: &proto, Port: &port}
	if end != 0 {
		p.EndPort = &end
	}
	return p
}

var (
	ingressOnly = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	egressOnly  = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
)

func TestPolicy(t *testing.T) {
	testutil.Root(t, "nsenter", "etcd", "containerd", "runc", "nft")
	b := buildWeft(t)
	c := kubebed.Start(t, kubebed.Options{Nodes: 3, CNI: kubebed.CNINone, ClusterCIDR: podRange, Images: []string{b.image}})
	ctx := t.Context()
	cs := c.Client()
	dumpWeftLogsOnFailure(t, c)
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
			if p.is(s) {
				return p
			}
		}
		t.Fatalf("no pod %s", s)
		return modelPod{}
	}
	create := func(ns string, name string, spec networkingv1.NetworkPolicySpec) {
		t.Helper()
		if _, err := cs.NetworkingV1().NetworkPolicies(space(ns)).Create(ctx, netpol(space(ns), name, spec), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	remove := func(ns string, names ...string) {
		t.Helper()
		for _, name := range names {
			if err := cs.NetworkingV1().NetworkPolicies(space(ns)).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// relabel merge-patches the labels of pod p (a nil value removes the label).
	relabel := func(p modelPod, kv map[string]any) {
		t.Helper()
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": kv}})
		if _, err := cs.CoreV1().Pods(p.space).Patch(ctx, p.name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("no policy: everyone reaches everyone", func(t *testing.T) {
		checkMatrix(t, c, pods, "no policy", all)
	})

	// Default deny of ingress in x.
	create("x", "deny-all", networkingv1.NetworkPolicySpec{PolicyTypes: ingressOnly})
	xDenied := func(from, to modelPod, cl cell) bool { return to.ns != "x" }
	t.Run("default deny ingress in x", func(t *testing.T) {
		checkMatrix(t, c, pods, "x/deny-all", xDenied)
		// The node still probes its pods (kubelet probes come from there).
		xa := find("x/a")
		if _, err := c.NodeExec(xa.node, c.TestboxBin, "get", "-t", "2s", "http://"+xa.ip+":80/"); err != nil {
			t.Errorf("node %s → x/a under deny-all: %v; want reached (traffic from the pod's own node is allowed)", xa.node, err)
		}
		// Every node's policy table begins with the anti-spoofing check on
		// weft-cni's host veths.
		if out, err := c.NodeExec(xa.node, "nft", "list", "chain", "ip", "weft-policy", "forward"); err != nil ||
			!strings.Contains(out, `iifname "wf*" fib saddr . iif oif 0 counter`) { // nft prints "missing" as oif 0
			t.Errorf("nft list chain ip weft-policy forward on %s: %v\n%s\nwant the anti-spoofing rule", xa.node, err, out)
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

	// The cases below add one allowing policy to x's default deny each.

	// Allow ingress to x from namespace y.
	create("x", "allow-from-y", networkingv1.NetworkPolicySpec{PolicyTypes: ingressOnly,
		Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: labels("ns", "y")}}}}})
	t.Run("allow from namespace y", func(t *testing.T) {
		checkMatrix(t, c, pods, "x/allow-from-y", func(from, to modelPod, cl cell) bool { return to.ns != "x" || from.ns == "y" })
		var ex client.Explanation
		xa := find("x/a")
		if err := weftCLI(c, b, xa.node, &ex, "policy", "explain", space("y")+"/c", space("x")+"/a", "80/TCP"); err != nil {
			t.Fatal(err)
		}
		if !ex.Allowed || len(ex.Ingress.Rules) != 1 || ex.Ingress.Rules[0].Policy != space("x")+"/allow-from-y" {
			t.Errorf("weft policy explain y/c x/a 80/TCP = %+v; want allowed by %s/allow-from-y rule 0", ex, space("x"))
		}
	})
	remove("x", "allow-from-y")

	// Pods in a namespace: podSelector AND namespaceSelector in one peer.
	create("x", "allow-from-y-b", networkingv1.NetworkPolicySpec{PodSelector: *labels("pod", "a"), PolicyTypes: ingressOnly,
		Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
			{NamespaceSelector: labels("ns", "y"), PodSelector: labels("pod", "b")}}}}})
	t.Run("allow from pods in a namespace", func(t *testing.T) {
		checkMatrix(t, c, pods, "x/allow-from-y-b", func(from, to modelPod, cl cell) bool {
			return to.ns != "x" || to.name == "a" && from.is("y/b")
		})
	})
	remove("x", "allow-from-y-b")

	// Named ports, resolved per destination pod with their protocol:
	// serve-81-tcp and serve-80-udp open 81/TCP and 80/UDP of x/a, and
	// neither 81/UDP nor 80/TCP.
	create("x", "allow-named", networkingv1.NetworkPolicySpec{PodSelector: *labels("pod", "a"), PolicyTypes: ingressOnly,
		Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{
			npPort(corev1.ProtocolTCP, intstr.FromString("serve-81-tcp"), 0), npPort(corev1.ProtocolUDP, intstr.FromString("serve-80-udp"), 0)}}}})
	t.Run("named ports", func(t *testing.T) {
		checkMatrix(t, c, pods, "x/allow-named", func(from, to modelPod, cl cell) bool {
			return to.ns != "x" || to.name == "a" && (cl == cell{81, "tcp"} || cl == cell{80, "udp"})
		})
	})
	remove("x", "allow-named")

	// A port range (endPort): TCP 81-82 and UDP 79-80 to every pod of x.
	create("x", "allow-range", networkingv1.NetworkPolicySpec{PolicyTypes: ingressOnly,
		Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{
			npPort(corev1.ProtocolTCP, intstr.FromInt32(81), 82), npPort(corev1.ProtocolUDP, intstr.FromInt32(79), 80)}}}})
	t.Run("port range", func(t *testing.T) {
		checkMatrix(t, c, pods, "x/allow-range", func(from, to modelPod, cl cell) bool {
			return to.ns != "x" || cl == cell{81, "tcp"} || cl == cell{80, "udp"}
		})
	})
	remove("x", "allow-range")

	// ipBlock with except: x/a from the pod range but y/b.
	yb := find("y/b")
	create("x", "allow-cidr-except", networkingv1.NetworkPolicySpec{PodSelector: *labels("pod", "a"), PolicyTypes: ingressOnly,
		Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
			{IPBlock: &networkingv1.IPBlock{CIDR: podRange, Except: []string{yb.ip + "/32"}}}}}}})
	t.Run("ipBlock with except", func(t *testing.T) {
		checkMatrix(t, c, pods, "x/allow-cidr-except", func(from, to modelPod, cl cell) bool {
			return to.ns != "x" || to.name == "a" && !from.is("y/b")
		})
	})
	remove("x", "allow-cidr-except")

	// A long-lived flow is cut: an ICMP echo stream from y/b has one
	// conntrack entry, so without the cut it would outlive a policy that
	// denies it.
	remove("x", "deny-all")
	t.Run("a change cuts an established flow within 5 s", func(t *testing.T) {
		checkMatrix(t, c, pods, "open before the cut", all)
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
		create("x", "deny-all", networkingv1.NetworkPolicySpec{PolicyTypes: ingressOnly})
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
		checkMatrix(t, c, pods, "deny-all after the restart", xDenied)
	})
	remove("x", "deny-all")

	// Egress: default deny in x, then allowing policies.
	create("x", "deny-all-egress", networkingv1.NetworkPolicySpec{PolicyTypes: egressOnly})
	t.Run("default deny egress in x", func(t *testing.T) {
		checkMatrix(t, c, pods, "x/deny-all-egress", func(from, to modelPod, cl cell) bool { return from.ns != "x" })
	})
	create("x", "allow-egress-to-ns", networkingv1.NetworkPolicySpec{PolicyTypes: egressOnly,
		Egress: []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: labels("ns", "y")}}}}})
	t.Run("egress to a namespace", func(t *testing.T) {
		checkMatrix(t, c, pods, "x/allow-egress-to-ns (y)", func(from, to modelPod, cl cell) bool { return from.ns != "x" || to.ns == "y" })
	})
	// A second allowing policy: the union of both.
	create("x", "allow-a-to-zc", networkingv1.NetworkPolicySpec{PodSelector: *labels("pod", "a"), PolicyTypes: egressOnly,
		Egress: []networkingv1.NetworkPolicyEgressRule{{
			To:    []networkingv1.NetworkPolicyPeer{{NamespaceSelector: labels("ns", "z"), PodSelector: labels("pod", "c")}},
			Ports: []networkingv1.NetworkPolicyPort{npPort(corev1.ProtocolTCP, intstr.FromInt32(80), 0)}}}})
	t.Run("multiple policies: the union", func(t *testing.T) {
		checkMatrix(t, c, pods, "x/allow-egress-to-ns (y) + x/allow-a-to-zc", func(from, to modelPod, cl cell) bool {
			return from.ns != "x" || to.ns == "y" || from.name == "a" && to.is("z/c") && cl == cell{80, "tcp"}
		})
	})
	// An update in place (Update, not delete and create): y becomes z.
	t.Run("policy update", func(t *testing.T) {
		np, err := cs.NetworkingV1().NetworkPolicies(space("x")).Get(ctx, "allow-egress-to-ns", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		np.Spec.Egress[0].To[0].NamespaceSelector = labels("ns", "z")
		if _, err := cs.NetworkingV1().NetworkPolicies(space("x")).Update(ctx, np, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		checkMatrix(t, c, pods, "x/allow-egress-to-ns updated to z", func(from, to modelPod, cl cell) bool { return from.ns != "x" || to.ns == "z" })
	})
	remove("x", "deny-all-egress", "allow-egress-to-ns", "allow-a-to-zc")

	// Pods that change labels: a client gains the label a policy allows
	// (source side), a server gains the label a default deny selects
	// (destination side). Each is measured from the patch until the
	// probe's verdict changes.
	create("x", "allow-from-clients", networkingv1.NetworkPolicySpec{PolicyTypes: ingressOnly,
		Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
			{NamespaceSelector: labels(), PodSelector: labels("role", "client")}}}}})
	create("y", "deny-marked", networkingv1.NetworkPolicySpec{PodSelector: *labels("isolate", "yes"), PolicyTypes: ingressOnly})
	t.Run("pods that change labels", func(t *testing.T) {
		checkMatrix(t, c, pods, "x/allow-from-clients, no client yet", xDenied)
		yc, xa, zb, ya := find("y/c"), find("x/a"), find("z/b"), find("y/a")
		start := time.Now()
		relabel(yc, map[string]any{"role": "client"})
		took, err := probeUntil(c, yc, xa, cell{80, "tcp"}, "ok", start)
		if err != nil {
			t.Errorf("y/c labelled role=client: %v", err)
		}
		t.Logf("y/c labelled role=client: y/c → x/a 80/TCP reached %v after the patch (exec included)", took.Round(time.Millisecond))
		start = time.Now()
		relabel(ya, map[string]any{"isolate": "yes"})
		took, err = probeUntil(c, zb, ya, cell{80, "tcp"}, "fail", start)
		if err != nil {
			t.Errorf("y/a labelled isolate=yes: %v", err)
		}
		t.Logf("y/a labelled isolate=yes: z/b → y/a 80/TCP denied %v after the patch (exec included)", took.Round(time.Millisecond))
		checkMatrix(t, c, pods, "y/c a client, y/a isolated", func(from, to modelPod, cl cell) bool {
			return (to.ns != "x" || from.is("y/c")) && !to.is("y/a")
		})
		relabel(yc, map[string]any{"role": nil})
		relabel(ya, map[string]any{"isolate": nil})
		checkMatrix(t, c, pods, "labels removed again", xDenied)
	})
	remove("x", "allow-from-clients")
	remove("y", "deny-marked")

	// A policy the API accepts but weft cannot express (SCTP: this
	// kernel has no SCTP) is reported in status and logs, still isolates
	// the pod it selects, and other policies keep working.
	create("y", "allow-sctp-only", networkingv1.NetworkPolicySpec{PodSelector: *labels("pod", "c"), PolicyTypes: ingressOnly,
		Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{npPort(corev1.ProtocolSCTP, intstr.FromInt32(80), 0)}}}})
	create("x", "allow-from-z", networkingv1.NetworkPolicySpec{PolicyTypes: ingressOnly,
		Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: labels("ns", "z")}}}}})
	t.Run("a policy weft cannot express is reported and still isolates", func(t *testing.T) {
		checkMatrix(t, c, pods, "y/allow-sctp-only + x/allow-from-z", func(from, to modelPod, cl cell) bool {
			return !to.is("y/c") && (to.ns != "x" || from.ns == "z")
		})
		yc := find("y/c")
		name := space("y") + "/allow-sctp-only"
		var st client.Status
		if err := weftCLI(c, b, yc.node, &st, "status"); err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(st.Problems, func(p string) bool { return strings.Contains(p, name) && strings.Contains(p, "SCTP") }) {
			t.Errorf("weft status on %s: problems %q; want one naming %s and SCTP", yc.node, st.Problems, name)
		}
		if st.Policy.Policies != 2 || !st.Policy.Synced {
			t.Errorf("weft status on %s: policy %+v; want synced with 2 policies", yc.node, st.Policy)
		}
		peers, err := cs.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: peerSel, FieldSelector: "spec.nodeName=" + yc.node})
		if err != nil || len(peers.Items) != 1 {
			t.Fatalf("weft peer pod on %s: %v %v", yc.node, peers, err)
		}
		testutil.Eventually(t, 10*time.Second, "the peer on "+yc.node+" to log "+name, func() error {
			logs, err := cs.CoreV1().Pods("kube-system").GetLogs(peers.Items[0].Name, &corev1.PodLogOptions{}).DoRaw(ctx)
			if err != nil {
				return err
			}
			for _, l := range strings.Split(string(logs), "\n") {
				if strings.Contains(l, name) && strings.Contains(l, "SCTP") {
					t.Logf("the peer on %s logs: %s", yc.node, l)
					return nil
				}
			}
			return fmt.Errorf("no line names %s and SCTP", name)
		})
	})
	remove("y", "allow-sctp-only")
	remove("x", "allow-from-z")

	// Everything removed: open again.
	t.Run("policies removed: open again", func(t *testing.T) {
		checkMatrix(t, c, pods, "no policy again", all)
	})
}
