// Package policy owns Kubernetes NetworkPolicy (networking.k8s.io/v1) as
// plain data: the model of a cluster that policies see, the evaluator
// that is the single statement of the semantics, and the compiler from
// the model to one node's nftables program, a small IR that an
// interpreter in Go executes for tests. It does not watch the API
// (kube/ hands snapshots over), touch the kernel (policy/nft applies a
// Program with google/nftables), cut conntrack entries or read NFLOG. It
// imports no client-go, no netlink and no other weft package (guarded by
// a test); the API's types come from k8s.io/api.
//
//	np, err := policy.Convert(obj, policy.Capabilities{SCTP: false}) // once per object version; err: what never matches
//	m := policy.NewModel(policy.Snapshot{Namespaces: nss, Pods: pods, Policies: nps, Nodes: nodes})
//	v := policy.Evaluate(m, m.Endpoint(src), m.Endpoint(dst), 80, policy.TCP)
//	fmt.Println(v) // denied (egress allowed: no policy selects the pod; ingress denied: default deny: selected by x/deny-all, no rule allows)
//	prog, err := policy.Compile(m, "node-1") // table ip weft-policy for node-1's pods
//	lines, err := nft.NewApplier(conn).Apply(prog) // policy/nft: one transaction, only the difference
//
// Files, in pipeline order:
//
//	model.go    Snapshot, Model (indexed, immutable), Pod, Namespace, Node, Endpoint, Protocol
//	convert.go  Convert: an API object into NetworkPolicy, Rule, Peer, Port, Selector, with Problems
//	eval.go     Evaluate, Verdict, Decision: the semantics, naming the deciding policies and rules
//	compile.go  Config, Compile: the model for one node as a Program (the table's design is here)
//	ranges.go   ipBlocks, excepts cut out, as disjoint address ranges
//	program.go  Program, Chain, ChainRule, Match, Action, Set, Elem: the IR, printed in nft syntax
//	judge.go    Program.Judge: the IR run on a packet, hook by hook as netfilter runs it
//
// Semantics decisions (upstream's where upstream decides; reasons in
// eval.go and compile.go):
//   - ipBlock peers match by address, pod addresses included, as
//     kube-network-policies and cyclonus do and the e2e suite tests.
//   - Named ports resolve on the destination pod: on ingress the selected
//     pod, on egress the destination pod whatever peer matched it; towards
//     an address that is no pod a named port never matches.
//   - "The node" is a node's host network namespace, known by its own
//     addresses (Node.Addrs). Traffic from a pod's own node to the pod is
//     always allowed: it leaves through output, where the table has no
//     chain. Another node is an address like any other. Egress from a pod
//     to its own node is judged (an ipBlock or a rule without peers allows
//     it), as kube-network-policies does since it judges pod-to-node
//     traffic; so a pod under an egress default deny needs an ipBlock for
//     the node-local DNS address.
//   - Denied packets are dropped, not rejected (as upstream
//     implementations do: a client sees a timeout, a scanner learns
//     nothing), counted, and logged through NFLOG, rate-limited per pod
//     chain, with the prefix "weft-policy deny <direction> <namespace>/<pod>".
//   - A port whose protocol the kernel lacks (SCTP here) and a part the
//     API would refuse never match; their policy still isolates its pods;
//     Model.Problems names every such part. Only a policy whose podSelector
//     cannot be understood is refused whole.
//   - Established and related traffic passes unjudged: a policy change
//     cuts existing connections only once their conntrack entries go.
//   - The pod network is IPv4: the table is of family ip, and IPv6 traffic
//     is not judged.
package policy
