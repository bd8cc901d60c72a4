package kube

// The Node informer. A shared informer watches Nodes with resync 0: the
// daemon's sync loop already repairs drift every few seconds, and a
// resync would only replay the cache. A transform trims every Node to the
// few fields weft reads (name, InternalIPs, the Ready and
// NetworkUnavailable conditions without their heartbeat times, creation
// time) before it enters the cache, so the images lists and managed fields
// of a large cluster's Nodes do not sit in every peer's memory, and the
// kubelet's periodic status updates compare equal and wake nobody. Every
// add, delete and real change signals Changed (cap 1, coalescing, like
// gossip's); readers then take a full snapshot with Nodes: desired state,
// not events.

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// Node is what weft knows of one Kubernetes Node.
type Node struct {
	Name string
	// InternalIP is the Node's first IPv4 InternalIP address, else its
	// first InternalIP; invalid when it has none yet.
	InternalIP netip.Addr
	// Ready: the Node's Ready condition is True.
	Ready bool
	// NetworkAvailable: the NetworkUnavailable condition is False with
	// reason NetworkReason, i.e. a weft peer has set it.
	NetworkAvailable bool
	// Created is the Node object's creation time.
	Created time.Time
}

// nodeCache is the informer's state, filled in by Run.
type nodeCache struct {
	changed chan struct{} // cap 1

	mu      sync.Mutex // guards following
	lister  listersv1.NodeLister
	synced  bool
	started bool
}

func (nc *nodeCache) signal() {
	select {
	case nc.changed <- struct{}{}:
	default:
	}
}

// Changed receives a value after the informer first synced and whenever
// a Node is added, deleted or changes in a field of Node. Coalescing: one
// value may stand for many changes.
func (c *Client) Changed() <-chan struct{} { return c.nodes.changed }

// Nodes returns every Node in the informer's cache, sorted by name, and
// whether the cache has synced with the API server. Before it has, the
// list is nil: an empty cache does not mean that the cluster has no Nodes.
func (c *Client) Nodes() ([]Node, bool) {
	c.nodes.mu.Lock()
	lister, synced := c.nodes.lister, c.nodes.synced
	c.nodes.mu.Unlock()
	if !synced {
		return nil, false
	}
	objs, err := lister.List(labels.Everything())
	if err != nil { // the cache's lister never fails for a plain selector
		return nil, false
	}
	out := make([]Node, 0, len(objs))
	for _, n := range objs {
		out = append(out, nodeOf(n))
	}
	sortNodes(out)
	return out, true
}

// ListNodes lists the Nodes straight from the API server (served from its
// watch cache), sorted by name: for decisions that must be taken before
// Run, such as the IPAM bootstrap quorum.
func (c *Client) ListNodes(ctx context.Context) ([]Node, error) {
	l, err := c.api.ListNodes(ctx, metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	out := make([]Node, 0, len(l.Items))
	for i := range l.Items {
		out = append(out, nodeOf(&l.Items[i]))
	}
	sortNodes(out)
	return out, nil
}

// Run runs the Node informer (and, with Config.Policy, the policy
// informers) until ctx is done and returns after its goroutines have
// exited. It may be called once.
func (c *Client) Run(ctx context.Context) error {
	c.nodes.mu.Lock()
	if c.nodes.started {
		c.nodes.mu.Unlock()
		return fmt.Errorf("kube: Run called twice")
	}
	c.nodes.started = true
	c.nodes.mu.Unlock()

	inf, err := c.informer(resNodes, &corev1.Node{})
	if err != nil {
		return err
	}
	reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.nodes.signal() },
		DeleteFunc: func(any) { c.nodes.signal() },
		UpdateFunc: func(old, cur any) {
			o, ok1 := old.(*corev1.Node)
			n, ok2 := cur.(*corev1.Node)
			if !ok1 || !ok2 || nodeOf(o) != nodeOf(n) {
				c.nodes.signal()
			}
		},
	})
	if err != nil {
		return fmt.Errorf("node informer: %w", err)
	}
	lister := listersv1.NewNodeLister(inf.GetIndexer())
	toStart := []cache.SharedIndexInformer{inf}
	var policySynced func(context.Context) bool
	if c.cfg.Policy {
		var infs []cache.SharedIndexInformer
		if infs, policySynced, err = c.policyInformers(); err != nil {
			return err
		}
		toStart = append(toStart, infs...)
	}
	// Every informer runs until ctx is done; Run returns after they
	// stopped.
	var informers sync.WaitGroup
	defer informers.Wait()
	for _, inf := range toStart {
		informers.Go(func() { inf.RunWithContext(ctx) })
	}
	c.log.Info("watching nodes", "policy", c.cfg.Policy)
	if policySynced != nil {
		var wg sync.WaitGroup
		defer wg.Wait()
		wg.Go(func() {
			if policySynced(ctx) {
				c.log.Info("pod, namespace and networkpolicy informers synced")
			}
		})
	}
	if !cache.WaitForCacheSync(ctx.Done(), reg.HasSynced) {
		return nil // ctx done before the first list
	}
	c.nodes.mu.Lock()
	c.nodes.lister, c.nodes.synced = lister, true
	c.nodes.mu.Unlock()
	c.nodes.signal()
	c.log.Info("node informer synced")
	<-ctx.Done()
	return nil
}

// informer is a shared informer of one resource, indexed by namespace,
// without resync, trimming every object as it enters the cache.
func (c *Client) informer(resource string, example runtime.Object) (cache.SharedIndexInformer, error) {
	lw, err := c.api.ListerWatcher(resource)
	if err != nil {
		return nil, err
	}
	inf := cache.NewSharedIndexInformer(lw, example, 0, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	if err := inf.SetTransform(trim); err != nil {
		return nil, fmt.Errorf("%s informer: %w", resource, err)
	}
	return inf, nil
}

// trim is every informer's transform: each kind reduced to what weft
// reads. Other kinds (and tombstones) pass unchanged.
func trim(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Node:
		return trimNode(o), nil
	case *corev1.Pod:
		return trimPod(o), nil
	case *corev1.Namespace:
		return trimNamespace(o), nil
	case *networkingv1.NetworkPolicy:
		return trimPolicy(o), nil
	}
	return obj, nil
}

// trimNode is the Node reduced to what nodeOf reads.
func trimNode(n *corev1.Node) *corev1.Node {
	t := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID,
		ResourceVersion: n.ResourceVersion, CreationTimestamp: n.CreationTimestamp}}
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			t.Status.Addresses = append(t.Status.Addresses, a)
		}
	}
	for _, cd := range n.Status.Conditions {
		if cd.Type == corev1.NodeReady || cd.Type == corev1.NodeNetworkUnavailable {
			t.Status.Conditions = append(t.Status.Conditions, corev1.NodeCondition{Type: cd.Type, Status: cd.Status, Reason: cd.Reason})
		}
	}
	return t
}

// nodeOf turns a Node object into weft's Node.
func nodeOf(n *corev1.Node) Node {
	out := Node{Name: n.Name, Created: n.CreationTimestamp.Time}
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		if err != nil {
			continue
		}
		ip = ip.Unmap()
		if !out.InternalIP.IsValid() || (ip.Is4() && !out.InternalIP.Is4()) {
			out.InternalIP = ip
		}
	}
	for _, cd := range n.Status.Conditions {
		switch cd.Type {
		case corev1.NodeReady:
			out.Ready = cd.Status == corev1.ConditionTrue
		case corev1.NodeNetworkUnavailable:
			out.NetworkAvailable = cd.Status == corev1.ConditionFalse && cd.Reason == NetworkReason
		}
	}
	return out
}

func sortNodes(ns []Node) {
	slices.SortFunc(ns, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
}
