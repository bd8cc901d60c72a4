package kube

// The NetworkPolicy informers: Pods, Namespaces and NetworkPolicies, made
// like the Node informer (one connection pool, one transform), started
// only when Config.Policy is set. Like Nodes, every object is trimmed
// before it enters the cache to what policy reads:
//
//   - a Pod to its name, namespace, labels, nodeName, hostNetwork, named
//     container ports, podIPs, phase, creation and deletion times (no
//     status conditions, container statuses, volumes or env: a pod's
//     status churns while it starts, and none of that changes a verdict);
//   - a Namespace to its name and labels;
//   - a NetworkPolicy to its name, namespace and spec (no annotations:
//     kubectl's last-applied-configuration doubles every object).
//
// An update wakes the daemon only when what policy sees changed (a
// kubelet status update of a running pod compares equal). Readers take a
// full view with PolicyView: desired state, not events. NetworkPolicies
// are converted into policy's form once per object version and cached,
// so a view of a thousand policies converts only the one that changed.

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	listersv1 "k8s.io/client-go/listers/core/v1"
	listersnetv1 "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/weftmesh/weft/policy"
)

// Pod is what weft knows of one Pod for NetworkPolicy.
type Pod struct {
	Namespace, Name string
	Labels          map[string]string
	Node            string // spec.nodeName; "" while unscheduled
	// IP is the pod's first IPv4 address in status.podIPs (else
	// status.podIP); invalid until the kubelet has written it.
	IP          netip.Addr
	HostNetwork bool // the pod shares its node's network namespace: policy does not apply
	// Finished: phase Succeeded or Failed. Its sandbox is gone and its
	// address may already be another pod's.
	Finished bool
	Deleting bool      // deletionTimestamp is set (it may still run its grace period)
	Created  time.Time // creation time
	Ports    []policy.NamedPort
}

// PolicyView is the cluster as NetworkPolicy needs it, from the
// informers' caches.
type PolicyView struct {
	Namespaces []policy.Namespace      // sorted by name
	Pods       []Pod                   // sorted by namespace, name
	Policies   []*policy.NetworkPolicy // converted; sorted by namespace, name
	// Refused are the policies Convert could not understand at all (a
	// podSelector it cannot parse): nobody can tell which pods they
	// isolate, so they are left out and reported.
	Refused []error
	// Version counts the changes the informers delivered before the view
	// was taken: two views of one version hold the same objects.
	Version uint64
}

// policyCache is the state of the policy informers, filled in by Run.
type policyCache struct {
	changed chan struct{} // cap 1

	mu         sync.Mutex // guards following
	pods       listersv1.PodLister
	namespaces listersv1.NamespaceLister
	policies   listersnetv1.NetworkPolicyLister
	synced     bool
	version    uint64
	converted  map[types.UID]converted // by policy UID
}

// converted is one NetworkPolicy version's conversion.
type converted struct {
	rv  string
	np  *policy.NetworkPolicy
	err error
}

func (pc *policyCache) bump() {
	pc.mu.Lock()
	pc.version++
	pc.mu.Unlock()
	select {
	case pc.changed <- struct{}{}:
	default:
	}
}

// PolicyChanged receives a value after the policy informers first synced
// and whenever a Pod, Namespace or NetworkPolicy is added, deleted or
// changes in what policy sees. Coalescing. Nothing is ever sent when
// Config.Policy is off.
func (c *Client) PolicyChanged() <-chan struct{} { return c.policy.changed }

// PolicyVersion returns the version PolicyView would have now, and
// whether the informers have synced. It does not list anything.
func (c *Client) PolicyVersion() (uint64, bool) {
	c.policy.mu.Lock()
	defer c.policy.mu.Unlock()
	return c.policy.version, c.policy.synced
}

// PolicyView returns the Pods, Namespaces and NetworkPolicies in the
// informers' caches, and whether all three have synced. Before they have
// the view is empty: an empty cache does not mean that no policy exists.
func (c *Client) PolicyView() (PolicyView, bool) {
	pc := &c.policy
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if !pc.synced {
		return PolicyView{}, false
	}
	v := PolicyView{Version: pc.version}
	nss, err1 := pc.namespaces.List(labels.Everything())
	pods, err2 := pc.pods.List(labels.Everything())
	nps, err3 := pc.policies.List(labels.Everything())
	if err1 != nil || err2 != nil || err3 != nil { // the cache's listers never fail for a plain selector
		return PolicyView{}, false
	}
	for _, ns := range nss {
		v.Namespaces = append(v.Namespaces, policy.Namespace{Name: ns.Name, Labels: ns.Labels})
	}
	slices.SortFunc(v.Namespaces, func(a, b policy.Namespace) int { return cmp.Compare(a.Name, b.Name) })
	for _, p := range pods {
		v.Pods = append(v.Pods, podOf(p))
	}
	slices.SortFunc(v.Pods, func(a, b Pod) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	seen := make(map[types.UID]bool, len(nps))
	for _, np := range nps {
		seen[np.UID] = true
		cv, ok := pc.converted[np.UID]
		if !ok || cv.rv != np.ResourceVersion {
			out, err := policy.Convert(np, c.cfg.Capabilities)
			cv = converted{rv: np.ResourceVersion, np: out, err: err}
			pc.converted[np.UID] = cv
		}
		if cv.np == nil {
			v.Refused = append(v.Refused, cv.err)
			continue
		}
		v.Policies = append(v.Policies, cv.np)
	}
	for uid := range pc.converted {
		if !seen[uid] {
			delete(pc.converted, uid)
		}
	}
	slices.SortFunc(v.Policies, func(a, b *policy.NetworkPolicy) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return v, true
}

// policyInformers makes the policy informers, for Run to start. It returns
// them and the function that waits for their first sync.
func (c *Client) policyInformers() ([]cache.SharedIndexInformer, func(ctx context.Context) bool, error) {
	pc := &c.policy
	changedIf := func(same func(old, cur any) bool) cache.ResourceEventHandler {
		return cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { pc.bump() },
			DeleteFunc: func(any) { pc.bump() },
			UpdateFunc: func(old, cur any) {
				if !same(old, cur) {
					pc.bump()
				}
			},
		}
	}
	var infs []cache.SharedIndexInformer
	var regs []cache.ResourceEventHandlerRegistration
	watch := func(resource string, example runtime.Object, same func(old, cur any) bool) (cache.Indexer, error) {
		inf, err := c.informer(resource, example)
		if err != nil {
			return nil, err
		}
		reg, err := inf.AddEventHandler(changedIf(same))
		if err != nil {
			return nil, fmt.Errorf("policy informers: %w", err)
		}
		infs, regs = append(infs, inf), append(regs, reg)
		return inf.GetIndexer(), nil
	}
	pods, err := watch(resPods, &corev1.Pod{}, samePod)
	if err != nil {
		return nil, nil, err
	}
	namespaces, err := watch(resNamespaces, &corev1.Namespace{}, sameNamespace)
	if err != nil {
		return nil, nil, err
	}
	policies, err := watch(resNetworkPolicies, &networkingv1.NetworkPolicy{}, samePolicy)
	if err != nil {
		return nil, nil, err
	}
	podLister := listersv1.NewPodLister(pods)
	nsLister := listersv1.NewNamespaceLister(namespaces)
	npLister := listersnetv1.NewNetworkPolicyLister(policies)
	return infs, func(ctx context.Context) bool {
		synced := make([]cache.InformerSynced, len(regs))
		for i, r := range regs {
			synced[i] = r.HasSynced
		}
		if !cache.WaitForCacheSync(ctx.Done(), synced...) {
			return false
		}
		pc.mu.Lock()
		pc.pods, pc.namespaces, pc.policies, pc.synced = podLister, nsLister, npLister, true
		pc.mu.Unlock()
		pc.bump()
		return true
	}, nil
}

func samePod(old, cur any) bool {
	o, ok1 := old.(*corev1.Pod)
	n, ok2 := cur.(*corev1.Pod)
	return ok1 && ok2 && reflect.DeepEqual(podOf(o), podOf(n))
}

func sameNamespace(old, cur any) bool {
	o, ok1 := old.(*corev1.Namespace)
	n, ok2 := cur.(*corev1.Namespace)
	return ok1 && ok2 && reflect.DeepEqual(o.Labels, n.Labels)
}

func samePolicy(old, cur any) bool {
	o, ok1 := old.(*networkingv1.NetworkPolicy)
	n, ok2 := cur.(*networkingv1.NetworkPolicy)
	return ok1 && ok2 && reflect.DeepEqual(o.Spec, n.Spec)
}

// trimPod is the Pod reduced to what podOf reads.
func trimPod(p *corev1.Pod) *corev1.Pod {
	t := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID,
		ResourceVersion: p.ResourceVersion, Labels: p.Labels, CreationTimestamp: p.CreationTimestamp,
		DeletionTimestamp: p.DeletionTimestamp}}
	t.Spec.NodeName, t.Spec.HostNetwork = p.Spec.NodeName, p.Spec.HostNetwork
	for _, c := range p.Spec.Containers {
		if len(c.Ports) > 0 {
			t.Spec.Containers = append(t.Spec.Containers, corev1.Container{Name: c.Name, Ports: namedPorts(c.Ports)})
		}
	}
	for _, c := range p.Spec.InitContainers {
		// Sidecars (restartPolicy Always) serve for the pod's life.
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways && len(c.Ports) > 0 {
			t.Spec.InitContainers = append(t.Spec.InitContainers, corev1.Container{Name: c.Name,
				RestartPolicy: c.RestartPolicy, Ports: namedPorts(c.Ports)})
		}
	}
	t.Status.Phase, t.Status.PodIP, t.Status.PodIPs = p.Status.Phase, p.Status.PodIP, p.Status.PodIPs
	return t
}

// namedPorts keeps the container ports that have a name.
func namedPorts(ps []corev1.ContainerPort) []corev1.ContainerPort {
	var out []corev1.ContainerPort
	for _, p := range ps {
		if p.Name != "" {
			out = append(out, corev1.ContainerPort{Name: p.Name, ContainerPort: p.ContainerPort, Protocol: p.Protocol})
		}
	}
	return out
}

// podOf turns a Pod object into weft's Pod.
func podOf(p *corev1.Pod) Pod {
	out := Pod{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels, Node: p.Spec.NodeName,
		HostNetwork: p.Spec.HostNetwork, Created: p.CreationTimestamp.Time, Deleting: p.DeletionTimestamp != nil,
		Finished: p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed}
	ips := make([]string, 0, 1+len(p.Status.PodIPs))
	for _, a := range p.Status.PodIPs {
		ips = append(ips, a.IP)
	}
	ips = append(ips, p.Status.PodIP)
	for _, s := range ips {
		if ip, err := netip.ParseAddr(s); err == nil && ip.Unmap().Is4() {
			out.IP = ip.Unmap()
			break
		}
	}
	add := func(cs []corev1.Container) {
		for _, c := range cs {
			for _, cp := range c.Ports {
				proto, ok := protocolOf(cp.Protocol)
				if cp.Name == "" || !ok || cp.ContainerPort < 1 || cp.ContainerPort > 65535 {
					continue
				}
				out.Ports = append(out.Ports, policy.NamedPort{Name: cp.Name, Port: uint16(cp.ContainerPort), Protocol: proto})
			}
		}
	}
	add(p.Spec.Containers)
	for _, c := range p.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			add([]corev1.Container{c})
		}
	}
	return out
}

// protocolOf maps a container port's protocol ("" is TCP, the API's
// default).
func protocolOf(p corev1.Protocol) (policy.Protocol, bool) {
	switch p {
	case "", corev1.ProtocolTCP:
		return policy.TCP, true
	case corev1.ProtocolUDP:
		return policy.UDP, true
	case corev1.ProtocolSCTP:
		return policy.SCTP, true
	}
	return 0, false
}

// trimNamespace is the Namespace reduced to its name and labels.
func trimNamespace(n *corev1.Namespace) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID,
		ResourceVersion: n.ResourceVersion, Labels: n.Labels}}
}

// trimPolicy is the NetworkPolicy without annotations and managed fields.
func trimPolicy(np *networkingv1.NetworkPolicy) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: np.Name, Namespace: np.Namespace,
		UID: np.UID, ResourceVersion: np.ResourceVersion, Generation: np.Generation}, Spec: np.Spec}
}
