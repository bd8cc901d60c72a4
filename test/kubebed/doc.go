// Package kubebed is weft's real-cluster test harness: a real Kubernetes
// v1.37.2 control plane and N real kubelet nodes, each in network and mount
// namespaces of its own, on one machine, brought up by a Go test and torn
// down by its t.Cleanup with nothing left behind. It owns the cluster's
// lifecycle, its images and its clients; it knows nothing of weft: a weft
// test installs weft into a cluster started with CNI "none", as an operator
// would (kubectl apply of a DaemonSet).
//
//	c := kubebed.Start(t, kubebed.Options{Nodes: 3, CNI: kubebed.CNIBridge})
//	if err := c.WaitNodesReady(2 * time.Minute); err != nil { t.Fatal(err) }
//	c.Apply(deploymentYAML)
//	out, err := c.PodExec("default", pod, "/testbox", "get", "-k", "https://10.96.0.1/version")
//	c.StopNode("n3")
//
// Topology (192.168.7x.0/24, the first /24 of 192.168.70–79 that the
// machine's own routes and addresses do not touch):
//
//	netns PREFIX-sw  bridge br0 ── PREFIX-cp    .10  etcd (127.0.0.1), kube-apiserver :6443,
//	                           │                     kube-controller-manager, kube-scheduler
//	                           ├── PREFIX-n1    .11  containerd, kubelet, kube-proxy (nftables)
//	                           ├── ...               (and a mount namespace per node)
//	                           └── PREFIX-plain .200 a machine that is not in the cluster
//
// What is needed: root (the tests skip without), scripts/deps-kube.sh (etcd,
// containerd, runc, the reference CNI plugins, nftables, crictl) and the
// Kubernetes binaries of scripts/kube-build.sh in
// ${WEFT_K8S_CACHE:-/var/cache/weft/k8s-v1.37.2}/bin. Start runs both
// scripts; they return at once when all is there, but the first build takes
// 12–25 min (run `make kube-bins` first, or give go test -timeout 30m). One
// cluster per machine at a time: Start waits for /run/weft-kubebed.lock. A cluster
// of a test process that was killed is cleaned up by the next Start (the
// state file /run/weft-kubebed.state names what it had made).
// docs/kubernetes-testbed.md lists what the kubelet touches on the machine
// and what the harness does about each.
//
// Files:
//
//	doc.go            this overview
//	kubebed.go        Options, Cluster, Node, Start
//	net.go            subnet choice, namespaces, links, routes
//	pki.go            CA, serving certificate, service-account key, tokens, kubeconfigs
//	controlplane.go   etcd, kube-apiserver, kube-controller-manager, kube-scheduler
//	node.go           node mount namespace, cgroup root, containerd, kubelet, kube-proxy
//	proc.go           daemons: spawning in namespaces, logs, stopping
//	teardown.go       Stop, StopNode, Leftovers, DumpLogs
//	reap.go           the state file of a run, and the reaper that removes what it names
//	client.go         client-go, Apply/Delete, PodExec, Kubectl, waits
//	bins.go           the Kubernetes binaries and the test images
//	image.go          WriteImage: docker-archive images (internal/ociimage, go-containerregistry)
//	bench.go          PodStartLatencies, RSS
//	kubebed_test.go   the smoke test
//	images/pause      the sandbox image's binary
//	images/testbox    the workload image's binary (HTTP and UDP serve, get, probe, ping, lookup)
package kubebed
