// Package kubefake adapts client-go's fake clientset
// (k8s.io/client-go/kubernetes/fake) to kube.API, for tests. Production
// code must not import it: it links the generated clientset, which
// kube.API exists to keep out of the weft binary (kube/api.go).
//
//	cs := fake.NewClientset(objs...)
//	cfg := kube.DefaultConfig()
//	cfg.API = kubefake.New(cs)
package kubefake

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// API is kube.API over a clientset.
type API struct {
	cs kubernetes.Interface
}

// New adapts cs.
func New(cs kubernetes.Interface) *API { return &API{cs: cs} }

// ListerWatcher lists and watches one resource in all namespaces through
// the clientset, marked as not supporting watch-list (as client-go's own
// informers mark the fake clientset).
func (a *API) ListerWatcher(resource string) (cache.ListerWatcher, error) {
	var lw *cache.ListWatch
	switch resource {
	case "nodes":
		lw = listWatch[*corev1.NodeList](a.cs.CoreV1().Nodes())
	case "pods":
		lw = listWatch[*corev1.PodList](a.cs.CoreV1().Pods(metav1.NamespaceAll))
	case "namespaces":
		lw = listWatch[*corev1.NamespaceList](a.cs.CoreV1().Namespaces())
	case "networkpolicies":
		lw = listWatch[*networkingv1.NetworkPolicyList](a.cs.NetworkingV1().NetworkPolicies(metav1.NamespaceAll))
	default:
		return nil, fmt.Errorf("kubefake: no resource %q", resource)
	}
	return cache.ToListWatcherWithWatchListSemantics(lw, a.cs), nil
}

// lister is what a typed client of one resource offers to list and watch.
type lister[L runtime.Object] interface {
	List(context.Context, metav1.ListOptions) (L, error)
	Watch(context.Context, metav1.ListOptions) (watch.Interface, error)
}

func listWatch[L runtime.Object](c lister[L]) *cache.ListWatch {
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return c.List(ctx, o)
		},
		WatchFuncWithContext: c.Watch,
	}
}

// ListNodes lists the Nodes.
func (a *API) ListNodes(ctx context.Context, opts metav1.ListOptions) (*corev1.NodeList, error) {
	return a.cs.CoreV1().Nodes().List(ctx, opts)
}

// PatchNodeStatus applies a strategic merge patch to a Node's status.
func (a *API) PatchNodeStatus(ctx context.Context, node string, patch []byte) error {
	_, err := a.cs.CoreV1().Nodes().PatchStatus(ctx, node, patch)
	return err
}
