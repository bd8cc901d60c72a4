// Package policy owns Kubernetes NetworkPolicy (networking.k8s.io/v1) as
// plain data: the model of a cluster that policies see, the evaluator
// that is the single statement of the semantics, and the compiler from
// the model to one node's nftables program, a small IR that an
// interpreter in Go executes for tests. It does not watch the API
// (kube/ hands it snapshots), touch the kernel (policy/nft applies a
// Program with google/nftables), cut conntrack entries, or read NFLOG.
// It imports no client-go and no netlink (guarded by a test).
//
//	np, err := policy.Convert(obj, policy.Capabilities{SCTP: false}) // once per object version; err lists what never matches
//	m := policy.NewModel(policy.Snapshot{Namespaces: nss, Pods: pods, Policies: nps, Nodes: nodes})
//	v := policy.Evaluate(m, m.Endpoint(src), m.Endpoint(dst), 80, policy.TCP)
//	fmt.Println(v) // denied (egress allowed: no policy selects the pod; ingress denied: default deny: selected by x/deny-all, no rule allows)
//	prog, err := policy.Compile(m, "node-1")     // the table for node-1's pods
//	_, err = table.Apply(prog)                    // policy/nft: one netlink transaction, only the difference
//
// Files, in pipeline order:
//
//	model.go    Snapshot, Model (indexed, immutable), Pod, Namespace, Node, Endpoint, Protocol
//	convert.go  Convert: the API object into NetworkPolicy, Rule, Peer, Port, Selector; problems
//	eval.go     Evaluate, Verdict, Decision: the semantics, with the policies and rules that decide
//	compile.go  Config, Compile: the model for one node as a Program (the design of the table)
//	ranges.go   ipBlocks (except cut out) as disjoint address ranges
//	program.go  Program, Chain, ChainRule, Match, Action, Set, Elem: the IR, printed in nft syntax
//	judge.go    Program.Judge: the IR interpreter, hook by hook as netfilter runs it
//
// Semantics decisions (upstream where upstream decides; reasons in
// eval.go and compile.go):
//   - ipBlock peers match by address, pod addresses included (as
//     kube-network-policies and cyclonus do, and as the e2e suite tests).
//   - Named ports resolve on the destination pod: on ingress the selected
//     pod, on egress the destination pod whatever peer matched it; towards
//     an address that is no pod a named port never matches.
//   - "The node" is the node's host network namespace: its own addresses
//     (Node.Addrs), the sources of what it sends itself. Traffic from a
//     pod's own node to the pod is always allowed (it never passes a
//     judging chain). Traffic from other nodes is an address like any
//     other. Egress from a pod to its own node is judged (the node is an
//     address: an ipBlock or a rule without peers allows it), as
//     kube-network-policies does since it judges pod-to-node traffic.
//   - Denied packets are dropped, not rejected, and logged through NFLOG
//     (rate-limited per pod chain, prefix "weft-policy deny <direction>
//     <namespace>/<pod>").
//   - Ports whose protocol the kernel lacks (SCTP here) and parts the API
//     would refuse never match; their policy still isolates its pods; the
//     model's Problems name every such part.
//   - The pod network is IPv4; IPv6 traffic is not judged.
package policy
