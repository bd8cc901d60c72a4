package kube

// The API server seam. weft reads four kinds (Nodes, Pods and Namespaces
// of core/v1, NetworkPolicies of networking.k8s.io/v1) and writes one
// thing (its Node's NetworkUnavailable condition). client-go's generated
// clientset and informer factory would do it, but linking them registers
// every API group of Kubernetes in a scheme at start (56 group versions, with
// their conversion and defaulting functions), paid by every peer whether
// it runs under Kubernetes or not, and by every CLI command: 18 MB of the
// 52.6-MB binary, and ~11 MiB of an idle `weft launch`'s RSS (median 38.0
// -> 26.9 MiB among 40 real peers: mostly the binary's pages their
// initialisers touch, the rest their heap, which every GC also marks);
// `weft version` 26.6 -> 17.8 MiB. restAPI is two REST clients over a
// scheme of just the two groups weft reads; the informers are client-go's,
// over its list-watches (nodes.go, policy.go).
//
// Tests pass kube/kubefake, which adapts client-go's fake clientset to
// API (only tests import it, so the clientset stays out of the binary).

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/flowcontrol"
)

// API is the part of the Kubernetes API weft uses.
type API interface {
	// ListerWatcher lists and watches one resource in all namespaces:
	// "nodes", "pods", "namespaces" or "networkpolicies".
	ListerWatcher(resource string) (cache.ListerWatcher, error)
	// ListNodes lists the Nodes.
	ListNodes(ctx context.Context, opts metav1.ListOptions) (*corev1.NodeList, error)
	// PatchNodeStatus applies a strategic merge patch to a Node's status.
	PatchNodeStatus(ctx context.Context, node string, patch []byte) error
}

// The resources weft reads: nodes, pods and namespaces in core/v1,
// networkpolicies in networking.k8s.io/v1.
const (
	resNodes           = "nodes"
	resPods            = "pods"
	resNamespaces      = "namespaces"
	resNetworkPolicies = "networkpolicies"
)

// restAPI is API over the API server's REST interface.
type restAPI struct {
	core, networking *rest.RESTClient
}

// newRESTAPI builds the REST clients of the two groups from rc. It does
// not contact the API server.
func newRESTAPI(rc *rest.Config) (*restAPI, error) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, networkingv1.AddToScheme} {
		if err := add(scheme); err != nil {
			return nil, fmt.Errorf("kubernetes scheme: %w", err)
		}
	}
	codecs := rest.CodecFactoryForGeneratedClient(scheme, serializer.NewCodecFactory(scheme))
	// As the generated clientset does: one transport (connection pool)
	// and one client-side rate limiter shared by the groups' clients.
	base := rest.CopyConfig(rc)
	if base.UserAgent == "" {
		base.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	if base.RateLimiter == nil && base.QPS > 0 {
		if base.Burst <= 0 {
			return nil, fmt.Errorf("kubernetes client: QPS %v needs a burst > 0: %w", base.QPS, ErrBadConfig)
		}
		base.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(base.QPS, base.Burst)
	}
	httpClient, err := rest.HTTPClientFor(base)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	client := func(gv schema.GroupVersion, path string) (*rest.RESTClient, error) {
		c := rest.CopyConfig(base)
		c.GroupVersion, c.APIPath = &gv, path
		c.NegotiatedSerializer = codecs.WithoutConversion()
		cl, err := rest.RESTClientForConfigAndClient(c, httpClient)
		if err != nil {
			return nil, fmt.Errorf("kubernetes client %s: %w", gv, err)
		}
		return cl, nil
	}
	core, err := client(corev1.SchemeGroupVersion, "/api")
	if err != nil {
		return nil, err
	}
	networking, err := client(networkingv1.SchemeGroupVersion, "/apis")
	if err != nil {
		return nil, err
	}
	return &restAPI{core: core, networking: networking}, nil
}

func (a *restAPI) ListerWatcher(resource string) (cache.ListerWatcher, error) {
	switch resource {
	case resNodes, resPods, resNamespaces:
		return cache.NewListWatchFromClient(a.core, resource, metav1.NamespaceAll, fields.Everything()), nil
	case resNetworkPolicies:
		return cache.NewListWatchFromClient(a.networking, resource, metav1.NamespaceAll, fields.Everything()), nil
	}
	return nil, fmt.Errorf("kube: no resource %q", resource)
}

func (a *restAPI) ListNodes(ctx context.Context, opts metav1.ListOptions) (*corev1.NodeList, error) {
	out := &corev1.NodeList{}
	err := a.core.Get().Resource(resNodes).VersionedParams(&opts, metav1.ParameterCodec).Do(ctx).Into(out)
	return out, err
}

func (a *restAPI) PatchNodeStatus(ctx context.Context, node string, patch []byte) error {
	return a.core.Patch(types.StrategicMergePatchType).Resource(resNodes).Name(node).
		SubResource("status").Body(patch).Do(ctx).Error()
}
