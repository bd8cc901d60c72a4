package kubebed

// Talking to the cluster from the test process. The API server listens only
// on the switch, inside the cluster's namespaces; the test process stays in
// the machine's. client-go dials through dialControlPlane (each socket made
// inside the control plane's namespace); exec streams (which do not use the
// config's dialer) run whole on a thread in that namespace. kubectl, when
// the machine has one (Debian's v1.32 works against v1.37, with a version
// skew warning that Kubectl drops), runs under nsenter.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/weftmesh/weft/internal/testutil"
)

// makeClients builds the admin rest config and clients.
func (c *Cluster) makeClients() error {
	c.rest = &rest.Config{
		Host:            c.apiURL(),
		BearerToken:     c.pki.adminToken,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.pki.caPEM},
		Dial:            c.dialControlPlane,
		Proxy:           func(*http.Request) (*url.URL, error) { return nil, nil }, // never the machine's proxy
		QPS:             50,
		Burst:           100,
		UserAgent:       "kubebed",
	}
	var err error
	if c.client, err = kubernetes.NewForConfig(c.rest); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	if c.dyn, err = dynamic.NewForConfig(c.rest); err != nil {
		return fmt.Errorf("dynamic client: %w", err)
	}
	c.mapper = restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(c.client.Discovery()))
	return nil
}

// Client returns a client-go clientset with admin rights. Its connections
// are made inside the control plane's network namespace, so it works from
// the test process.
func (c *Cluster) Client() kubernetes.Interface { return c.client }

// Dynamic returns a dynamic client (custom resources), like Client.
func (c *Cluster) Dynamic() dynamic.Interface { return c.dyn }

// RESTConfig returns a copy of the admin client configuration (its Dial
// enters the control plane's network namespace).
func (c *Cluster) RESTConfig() *rest.Config { return rest.CopyConfig(c.rest) }

// Apply server-side applies every object of a multi-document YAML (or
// JSON) manifest, in order, as field manager "kubebed" with conflicts
// forced, as `kubectl apply --server-side --force-conflicts` would.
// Namespaced objects without a namespace go to "default".
func (c *Cluster) Apply(manifest string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	objs, err := decodeManifest(manifest)
	if err != nil {
		return err
	}
	force := true
	for _, o := range objs {
		r, err := c.resourceFor(ctx, o)
		if err != nil {
			return err
		}
		data, err := o.MarshalJSON()
		if err != nil {
			return err
		}
		if _, err := r.Patch(ctx, o.GetName(), types.ApplyPatchType, data,
			metav1.PatchOptions{FieldManager: "kubebed", Force: &force}); err != nil {
			return fmt.Errorf("apply %s %s: %w", o.GetKind(), o.GetName(), err)
		}
	}
	return nil
}

// Delete deletes every object of a manifest, last first, with background
// propagation; objects that do not exist are fine. It does not wait for
// them to be gone.
func (c *Cluster) Delete(manifest string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	objs, err := decodeManifest(manifest)
	if err != nil {
		return err
	}
	bg := metav1.DeletePropagationBackground
	var errs []error
	for i := len(objs) - 1; i >= 0; i-- {
		o := objs[i]
		r, err := c.resourceFor(ctx, o)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := r.Delete(ctx, o.GetName(), metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete %s %s: %w", o.GetKind(), o.GetName(), err))
		}
	}
	return errors.Join(errs...)
}

// resourceFor maps o's kind to its resource (retrying discovery for a
// while: a CustomResourceDefinition applied just before takes a moment).
func (c *Cluster) resourceFor(ctx context.Context, o *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := o.GroupVersionKind()
	var m *meta.RESTMapping
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := c.poll(ctx, "the resource of "+gvk.String(), func() error {
		var err error
		m, err = c.mapper.RESTMapping(schema.GroupKind{Group: gvk.Group, Kind: gvk.Kind}, gvk.Version)
		if meta.IsNoMatchError(err) {
			c.mapper.Reset()
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if m.Scope.Name() != meta.RESTScopeNameNamespace {
		return c.dyn.Resource(m.Resource), nil
	}
	if o.GetNamespace() == "" {
		o.SetNamespace("default")
	}
	return c.dyn.Resource(m.Resource).Namespace(o.GetNamespace()), nil
}

// decodeManifest splits a multi-document YAML or JSON manifest into objects
// (empty documents skipped).
func decodeManifest(manifest string) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(manifest), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("manifest document %d: %w", len(objs)+1, err)
		}
		if len(m) == 0 {
			continue
		}
		o := &unstructured.Unstructured{Object: m}
		if o.GetKind() == "" || o.GetName() == "" {
			return nil, fmt.Errorf("manifest document %d: no kind or name", len(objs)+1)
		}
		objs = append(objs, o)
	}
}

// PodExec runs argv in the first container of pod ns/pod through the API
// server (exec, as `kubectl exec` does) and returns its stdout; the error
// carries stderr.
func (c *Cluster) PodExec(ns, pod string, argv ...string) (string, error) {
	return c.PodExecContainer(ns, pod, "", argv...)
}

// PodExecContainer is PodExec in container ctr ("" is the first one). It
// gives up after 5 minutes.
func (c *Cluster) PodExecContainer(ns, pod, ctr string, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if ctr == "" {
		p, err := c.client.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		if len(p.Spec.Containers) == 0 {
			return "", fmt.Errorf("pod %s/%s has no container", ns, pod)
		}
		ctr = p.Spec.Containers[0].Name
	}
	req := c.client.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: ctr, Command: argv, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	var stdout, stderr bytes.Buffer
	// The stream's connection is dialed by the executor itself (not through
	// the config's Dial): run it whole on a thread inside the control plane.
	err := testutil.InNetNS(c.ControlPlane.NetNSPath(), func() error {
		exe, err := remotecommand.NewSPDYExecutor(c.rest, http.MethodPost, req.URL())
		if err != nil {
			return err
		}
		return exe.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &stdout, Stderr: &stderr})
	})
	if err != nil {
		return stdout.String(), fmt.Errorf("exec %s in %s/%s: %w: %s", strings.Join(argv, " "), ns, pod, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// Kubectl runs the machine's kubectl against the cluster (admin) inside
// the control plane's network namespace and returns its stdout; the error
// carries stderr. The version-skew warning is dropped.
func (c *Cluster) Kubectl(args ...string) (string, error) {
	path, err := exec.LookPath("kubectl")
	if err != nil {
		return "", fmt.Errorf("kubectl: not installed (use Client, Apply, PodExec): %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	argv := append([]string{"--net=" + c.ControlPlane.NetNSPath(), "--", path, "--kubeconfig=" + c.Kubeconfig}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", argv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	var keep []string
	for _, l := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		if l != "" && !strings.Contains(l, "version difference") {
			keep = append(keep, l)
		}
	}
	if err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.Join(keep, "\n"))
	}
	return stdout.String(), nil
}

// WaitNodesReady waits up to d until every node that is not stopped is
// registered, Ready, and free of the not-ready, unreachable and
// network-unavailable taints (the scheduler places pods on it).
func (c *Cluster) WaitNodesReady(d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return c.poll(ctx, "every node Ready", func() error {
		nodes, err := c.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		var notReady []string
		for _, n := range c.Nodes {
			if n.isStopped() {
				continue
			}
			if why := nodeNotReady(nodes.Items, n.Name); why != "" {
				notReady = append(notReady, n.Name+": "+why)
			}
		}
		if len(notReady) > 0 {
			return errors.New(strings.Join(notReady, "; "))
		}
		return nil
	})
}

// nodeNotReady says why Node name is not ready for pods, or "".
func nodeNotReady(nodes []corev1.Node, name string) string {
	for _, n := range nodes {
		if n.Name != name {
			continue
		}
		for _, t := range n.Spec.Taints {
			switch t.Key {
			case corev1.TaintNodeNotReady, corev1.TaintNodeUnreachable, corev1.TaintNodeNetworkUnavailable:
				return "tainted " + t.Key
			}
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				if cond.Status == corev1.ConditionTrue {
					return ""
				}
				return fmt.Sprintf("Ready=%s (%s)", cond.Status, cond.Message)
			}
		}
		return "no Ready condition yet"
	}
	return "not registered"
}

// waitNodesRegistered waits until every Node object exists (CNINone: they
// are NotReady until a network plugin arrives).
func (c *Cluster) waitNodesRegistered(ctx context.Context) error {
	return c.poll(ctx, "every node registered", func() error {
		for _, n := range c.Nodes {
			if err := exited(c.daemon("kubelet-" + n.Name)); err != nil {
				return err
			}
			if _, err := c.client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{}); err != nil {
				return err
			}
		}
		return nil
	})
}

// WaitPodsReady waits up to d until want pods in namespace ns that match
// selector (a label selector, "" for all) are Ready, and returns them.
func (c *Cluster) WaitPodsReady(ns, selector string, want int, d time.Duration) ([]corev1.Pod, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var ready []corev1.Pod
	err := c.poll(ctx, fmt.Sprintf("%d pods Ready in %s (%s)", want, ns, selector), func() error {
		pods, err := c.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return err
		}
		ready = ready[:0]
		var waiting []string
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil && podReady(&p) {
				ready = append(ready, p)
			} else {
				waiting = append(waiting, fmt.Sprintf("%s %s", p.Name, p.Status.Phase))
			}
		}
		if len(ready) != want {
			return fmt.Errorf("%d of %d Ready; not ready: %v", len(ready), want, waiting)
		}
		return nil
	})
	return ready, err
}

func podReady(p *corev1.Pod) bool {
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}
