package kubebed

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/internal/testutil"
)

const spreadManifest = `
apiVersion: apps/v1
kind: Deployment
metadata: {name: spread}
spec:
  replicas: 6
  selector: {matchLabels: {app: spread}}
  template:
    metadata: {labels: {app: spread}}
    spec:
      automountServiceAccountToken: false
      enableServiceLinks: false
      terminationGracePeriodSeconds: 1
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule,
         labelSelector: {matchLabels: {app: spread}}}
      containers:
      - name: web
        image: localhost/weft-test/testbox:1.0
        imagePullPolicy: Never
        ports: [{containerPort: 8080}]
        readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: spread}
spec:
  selector: {app: spread}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: spread-np}
spec:
  type: NodePort
  selector: {app: spread}
  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]
`

// TestCluster brings up 3 nodes with the reference bridge plugin and checks
// what every later test relies on: scheduling with a spread constraint, pod
// to pod across nodes by IP with the source address kept, a ClusterIP
// Service through kube-proxy (nftables), the kubernetes Service, a NodePort
// from the plain machine through every node, node to pod, pod to the plain
// machine, the benchmark helper, StopNode; then the teardown leaves nothing.
func TestCluster(t *testing.T) {
	t0 := time.Now()
	c := Start(t, Options{Nodes: 3, CNI: CNIBridge})
	up := time.Since(t0)

	t1 := time.Now()
	if err := c.Apply(spreadManifest); err != nil {
		t.Fatal(err)
	}
	pods, err := c.WaitPodsReady("default", "app=spread", 6, 3*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("6 pods Ready %v after the apply", time.Since(t1).Round(time.Millisecond))
	perNode := map[string]int{}
	for _, p := range pods {
		perNode[p.Spec.NodeName]++
	}
	for _, n := range c.Nodes {
		if perNode[n.Name] != 2 {
			t.Errorf("pods per node = %v; want 2 on each of n1..n3", perNode)
			break
		}
	}

	// Every pod reaches one pod on each other node by pod IP, and the
	// server sees the client's pod IP (no NAT between pods).
	for _, from := range pods {
		done := map[string]bool{from.Spec.NodeName: true}
		for _, to := range pods {
			if done[to.Spec.NodeName] {
				continue
			}
			done[to.Spec.NodeName] = true
			out, err := c.PodExec("default", from.Name, "/testbox", "get", "http://"+to.Status.PodIP+":8080/")
			if err != nil {
				t.Errorf("%s (%s) -> %s (%s): %v", from.Name, from.Spec.NodeName, to.Name, to.Spec.NodeName, err)
				continue
			}
			if want := fmt.Sprintf("host=%s from=%s:", to.Name, from.Status.PodIP); !strings.HasPrefix(out, want) {
				t.Errorf("%s -> %s answered %q; want %q...", from.Name, to.Name, out, want)
			}
		}
	}

	// The ClusterIP Service from every pod (its endpoints are on all
	// nodes), until every backend has answered once.
	ctx := context.Background()
	svc, err := c.Client().CoreV1().Services("default").Get(ctx, "spread", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, from := range pods {
		testutil.Eventually(t, time.Minute, from.Name+" -> Service "+svc.Spec.ClusterIP, func() error {
			out, err := c.PodExec("default", from.Name, "/testbox", "get", "-t", "2s", "http://"+svc.Spec.ClusterIP+"/")
			if err != nil {
				return err
			}
			if !strings.HasPrefix(out, "host=spread-") {
				return fmt.Errorf("answer %q", out)
			}
			return nil
		})
	}
	seen := map[string]bool{}
	testutil.Eventually(t, time.Minute, "every backend behind the Service", func() error {
		out, err := c.PodExec("default", pods[0].Name, "/testbox", "get", "-t", "2s", "http://"+svc.Spec.ClusterIP+"/")
		if err == nil {
			seen[strings.TrimPrefix(strings.Fields(out)[0], "host=")] = true
		}
		if len(seen) < len(pods) {
			return fmt.Errorf("%d of %d backends answered", len(seen), len(pods))
		}
		return nil
	})

	// The kubernetes Service (the API server through kube-proxy).
	for _, from := range []int{0, len(pods) - 1} {
		out, err := c.PodExec("default", pods[from].Name, "/testbox", "get", "-k", "https://"+APIServerIP+"/version")
		if err != nil || !strings.Contains(out, K8sVersion) {
			t.Errorf("%s -> kubernetes Service /version = %q, %v; want %s", pods[from].Name, out, err, K8sVersion)
		}
	}

	// The plain machine reaches the NodePort through every node's address;
	// a node reaches a pod on another node; a pod reaches a server on the
	// plain machine (bridge: no masquerade, the plain machine routes the
	// pod ranges, so it sees the pod's address).
	for _, n := range c.Nodes {
		testutil.Eventually(t, time.Minute, "plain -> NodePort on "+n.Name, func() error {
			_, err := c.PlainExec(c.TestboxBin, "get", "-t", "2s", "http://"+n.IP.String()+":30080/")
			return err
		})
	}
	if out, err := c.NodeExec("n1", c.TestboxBin, "get", "http://"+pods[len(pods)-1].Status.PodIP+":8080/"); err != nil {
		t.Errorf("n1 -> pod %s: %v %s", pods[len(pods)-1].Name, err, out)
	}
	if err := c.SpawnPlain("web", c.TestboxBin, "serve", "-addr", ":8080"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, time.Minute, "pod -> plain machine", func() error {
		out, err := c.PodExec("default", pods[0].Name, "/testbox", "get", "-t", "2s", "http://"+c.Plain.IP.String()+":8080/")
		if err != nil {
			return err
		}
		if !strings.Contains(out, " from="+pods[0].Status.PodIP+":") {
			return fmt.Errorf("plain machine answered %q; want from=%s", out, pods[0].Status.PodIP)
		}
		return nil
	})

	if rss, cpu, err := c.PodUsage("default", pods[0].Name); err != nil || rss == 0 || cpu <= 0 {
		t.Errorf("PodUsage(%s) = %d bytes, %v CPU, %v; want both above 0", pods[0].Name, rss, cpu, err)
	}
	lat, err := c.PodStartLatencies(6, TestboxImage)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(lat)
	var rss uint64
	for _, v := range c.RSS() {
		rss += v
	}
	t.Logf("timings: up %v; pod create->Running for 6 pods: p50 %v max %v; RSS of the cluster %d MiB",
		up.Round(time.Millisecond), lat[len(lat)/2].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond), rss>>20)

	// A node switched off: nothing of it runs any more, the others work on.
	var n3Pods int
	for _, p := range pods {
		if p.Spec.NodeName == "n3" {
			n3Pods++
		}
	}
	if n3Pods == 0 || len(cgroupProcs(c.Node("n3").CgroupRoot)) == 0 {
		t.Errorf("before StopNode: %d pods on n3, processes in its cgroup %v; want some", n3Pods, cgroupProcs(c.Node("n3").CgroupRoot))
	}
	ts := time.Now()
	if err := c.StopNode("n3"); err != nil {
		t.Errorf("StopNode n3: %v", err)
	}
	t.Logf("StopNode n3 took %v", time.Since(ts).Round(time.Millisecond))
	if p := cgroupProcs(c.Node("n3").CgroupRoot); len(p) > 0 {
		t.Errorf("processes in n3's cgroup after StopNode: %v", p)
	}
	if _, err := c.Crictl("n3", "version"); err == nil {
		t.Errorf("n3's containerd answers after StopNode")
	}
	var a, b string // pods on n1 and n2
	for _, p := range pods {
		switch p.Spec.NodeName {
		case "n1":
			a = p.Name
		case "n2":
			b = p.Status.PodIP
		}
	}
	if out, err := c.PodExec("default", a, "/testbox", "get", "http://"+b+":8080/"); err != nil {
		t.Errorf("n1 -> n2 after StopNode n3: %v %s", err, out)
	}

	t2 := time.Now()
	if err := c.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	t.Logf("teardown took %v (%s)", time.Since(t2).Round(time.Millisecond), c.stopPhases)
	if left := c.Leftovers(); len(left) > 0 {
		t.Errorf("left after Stop:\n  %s", strings.Join(left, "\n  "))
	}
	if m := mountsUnder(c.Dir); len(m) > 0 {
		t.Errorf("mounts under %s after Stop: %v", c.Dir, m)
	}
	for _, n := range c.Nodes {
		if p := cgroupProcs(n.CgroupRoot); len(p) > 0 {
			t.Errorf("processes in %s after Stop: %v", n.CgroupRoot, p)
		}
	}
	if _, err := os.Stat(stateFile); !os.IsNotExist(err) {
		t.Errorf("%s after Stop: %v; want removed", stateFile, err)
	}
}

func TestWriteImageReproducible(t *testing.T) {
	dir := t.TempDir()
	files := map[string][]byte{"/bin/x": []byte("#!/bin/true\n"), "/etc/x.conf": []byte("a=1\n")}
	var tars [][]byte
	for i := range 2 {
		p := filepath.Join(dir, fmt.Sprintf("%d.tar", i))
		if err := WriteImage(p, "localhost/t/x:1", files, []string{"/bin/x"}); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		tars = append(tars, b)
	}
	if !bytes.Equal(tars[0], tars[1]) {
		t.Errorf("two WriteImage of the same inputs differ")
	}
}

func TestNthSlash24(t *testing.T) {
	tests := []struct {
		cidr string
		i    int
		want string
	}{
		{"10.244.0.0/16", 1, "10.244.1.0/24"},
		{"10.244.0.0/16", 3, "10.244.3.0/24"},
		{"10.32.0.0/12", 17, "10.32.17.0/24"},
		{"10.32.0.0/12", 256, "10.33.0.0/24"},
	}
	for _, tt := range tests {
		if got := nthSlash24(netip.MustParsePrefix(tt.cidr), tt.i); got.String() != tt.want {
			t.Errorf("nthSlash24(%s, %d) = %s; want %s", tt.cidr, tt.i, got, tt.want)
		}
	}
}

func TestDecodeManifest(t *testing.T) {
	objs, err := decodeManifest(spreadManifest + "\n---\n\n---\n")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range objs {
		got = append(got, o.GetKind()+"/"+o.GetName())
	}
	if want := []string{"Deployment/spread", "Service/spread", "Service/spread-np"}; !slices.Equal(got, want) {
		t.Errorf("decodeManifest = %v; want %v", got, want)
	}
	if _, err := decodeManifest("kind: ConfigMap\n"); err == nil {
		t.Error("decodeManifest of an object without a name: no error")
	}
}

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		name string
		o    Options
		ok   bool
	}{
		{"defaults", DefaultOptions(), true},
		{"none", Options{CNI: CNINone}.withDefaults(), true},
		{"bad CNI", Options{CNI: "weft"}.withDefaults(), false},
		{"no /24 per node", Options{Nodes: 3, ClusterCIDR: "10.0.0.0/23"}.withDefaults(), false},
		{"subnet not /24", Options{Subnet: "192.168.0.0/16"}.withDefaults(), false},
	}
	for _, tt := range tests {
		if err := tt.o.Validate(); (err == nil) != tt.ok {
			t.Errorf("%s: Validate() = %v; want ok %v", tt.name, err, tt.ok)
		}
	}
}
