// Package kube is weft's side of the Kubernetes API: it loads the client
// configuration (a kubeconfig file, or the pod's service account), keeps
// the cluster's Nodes in a shared informer (over a client of just the
// kinds it reads: api.go), sets the NetworkUnavailable condition of this
// peer's Node, and, for NetworkPolicy (Config.Policy), keeps Pods,
// Namespaces and NetworkPolicies in informers too. It hands the daemon
// plain snapshots (Node: name, InternalIP, Ready, created; PolicyView:
// pods, namespaces, policies already converted by policy.Convert) and
// change signals; client-go types stop here. It does not know gossip,
// ipam or the datapath, and decides
// nothing: which peers to join or reclaim, and what a policy means, are
// the daemon's and policy's business.
//
//	c, err := kube.New(kube.Config{Kubeconfig: path, Policy: true}) // "" = in-cluster
//	nodes, err := c.ListNodes(ctx)                    // once, at start
//	go c.Run(ctx)                                     // the informers
//	<-c.Changed(); nodes, synced := c.Nodes()
//	<-c.PolicyChanged(); view, synced := c.PolicyView()
//	err = c.SetNetworkAvailable(ctx, "n1")            // retried with backoff
package kube

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/weftmesh/weft/policy"
)

// Config configures a Client. Derive from DefaultConfig.
type Config struct {
	// Kubeconfig is the path of a kubeconfig file; "" = the in-cluster
	// configuration (service account token and KUBERNETES_SERVICE_HOST).
	Kubeconfig string
	// API, when non-nil, is used instead of the API server named by
	// Kubeconfig (tests pass kube/kubefake).
	API API
	// UserAgent names weft in the API server's logs and audit.
	UserAgent string
	// RetryMin and RetryMax bound the exponential backoff between attempts
	// of SetNetworkAvailable (durations; the pause doubles from RetryMin).
	RetryMin, RetryMax time.Duration
	// Logger receives the informer's lifecycle and retried errors; nil =
	// discard.
	Logger *slog.Logger
	// Policy: also watch Pods, Namespaces and NetworkPolicies
	// (PolicyView, PolicyChanged).
	Policy bool
	// Capabilities are what the kernel can match, for policy.Convert.
	Capabilities policy.Capabilities
}

// DefaultConfig returns the in-cluster configuration.
func DefaultConfig() Config {
	return Config{
		Kubeconfig: "",                     // in-cluster
		UserAgent:  "weft",                 // free text
		RetryMin:   200 * time.Millisecond, // first pause after a failed patch
		RetryMax:   10 * time.Second,       // longest pause
		Logger:     nil,                    // discard
		Policy:     false,                  // Nodes only
		// No SCTP: the daemon probes the kernel.
		Capabilities: policy.Capabilities{SCTP: false},
	}
}

// Validate reports a config that cannot work.
func (c Config) Validate() error {
	if c.RetryMin <= 0 || c.RetryMax < c.RetryMin {
		return fmt.Errorf("kube config: retry backoff %v..%v: %w", c.RetryMin, c.RetryMax, ErrBadConfig)
	}
	if c.API == nil && c.Kubeconfig != "" {
		if _, err := os.Stat(c.Kubeconfig); err != nil {
			return fmt.Errorf("kubeconfig: %w", err)
		}
	}
	return nil
}

// Sentinels; callers use errors.Is.
var (
	// ErrBadConfig is a Config that Validate refuses.
	ErrBadConfig = errors.New("bad kube config")
	// ErrNotInCluster means no kubeconfig was given and the process does
	// not run in a pod (no KUBERNETES_SERVICE_HOST or service account).
	ErrNotInCluster = errors.New("not running in a Kubernetes pod: pass --kubeconfig")
	// ErrNoNode means the Node asked for is not in the API.
	ErrNoNode = errors.New("no such Node")
)

// Client talks to one cluster's API server. Its methods may be called
// concurrently; Run may be called once.
type Client struct {
	cfg Config
	api API
	log *slog.Logger

	nodes  nodeCache   // the Node informer's view (nodes.go)
	policy policyCache // the policy informers' view (policy.go)
}

// New builds the client; it does not contact the API server.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	api := cfg.API
	if api == nil {
		rc, err := restConfig(cfg.Kubeconfig)
		if err != nil {
			return nil, err
		}
		rc.UserAgent = cfg.UserAgent
		if api, err = newRESTAPI(rc); err != nil {
			return nil, err
		}
	}
	c := &Client{cfg: cfg, api: api, log: log.With("component", "kube")}
	c.nodes.changed = make(chan struct{}, 1)
	c.policy.changed = make(chan struct{}, 1)
	c.policy.converted = map[types.UID]converted{}
	return c, nil
}

// restConfig loads the kubeconfig file, or the in-cluster configuration
// when path is "".
func restConfig(path string) (*rest.Config, error) {
	if path != "" {
		rc, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			return nil, fmt.Errorf("load kubeconfig %s: %w", path, err)
		}
		return rc, nil
	}
	rc, err := rest.InClusterConfig()
	if err != nil {
		if errors.Is(err, rest.ErrNotInCluster) {
			return nil, ErrNotInCluster
		}
		return nil, fmt.Errorf("in-cluster config: %w", err)
	}
	return rc, nil
}
