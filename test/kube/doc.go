// Package kube holds the real-cluster acceptance tests of weft (kube_test.go,
// bench_test.go); it has no code of its own. The tests install weft into a
// real Kubernetes cluster (the test/kubebed harness: kube-apiserver, controller-manager, scheduler and
// three kubelet + containerd nodes with kube-proxy in nftables mode, each
// node in network and mount namespaces of its own) the way an operator
// does: import the image built by the same code as `make image`, create the
// Secret, `kubectl apply -f deploy/weft.yaml`. Then they check what issue 14
// asks of a Kubernetes network: Ready nodes, pod to pod with source
// addresses kept, Services and NodePorts (through nodes with no backend),
// egress masquerade, pod names in DNS on the node-local address, a rolling
// restart of weft under a 10 ms ping, reclaim of a deleted Node's space,
// and a clean uninstall and teardown.
package kube
