package kubebed

// The control plane, all in the control-plane network namespace: etcd from
// Debian on its loopback (data in the cluster's scratch directory),
// kube-apiserver bound to the switch address (not loopback: the kubernetes
// Service then gets a real endpoint that pods reach through kube-proxy),
// kube-controller-manager and kube-scheduler on loopback.
//
// Flags that matter, and why:
//   - apiserver --allow-privileged: CNI DaemonSets run privileged.
//   - apiserver --kubelet-preferred-address-types=InternalIP,Hostname: else
//     exec/logs dial the kubelet by hostname, which nothing resolves.
//   - ServiceAccount admission is on (the default), so pods get projected
//     tokens; it needs the serviceaccount and root-ca-cert-publisher
//     controllers (the default ServiceAccount, kube-root-ca.crt).
//   - the nodelifecycle controller removes the not-ready taint that
//     TaintNodesByCondition puts on every new Node; without it nothing is
//     ever scheduled.
//   - --enable-priority-and-fairness=false: less memory and CPU.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/internal/testutil"
)

// controllers are kube-controller-manager's: what Services, workloads,
// namespaces, service accounts and node lifecycle need; no cloud, no
// IPAM, no volumes.
var controllers = []string{"endpointslice", "endpointslicemirroring", "namespace", "garbagecollector",
	"serviceaccount", "root-ca-cert-publisher", "deployment", "replicaset", "daemonset", "podgc", "nodelifecycle"}

func (c *Cluster) startControlPlane(ctx context.Context, apiUp chan<- struct{}) error {
	p, err := c.makePKI()
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	c.pki = p
	etcdDir := filepath.Join(c.Dir, "etcd")
	etcd, err := c.spawn("etcd", nil, "etcd", "--name", "kubebed", "--data-dir", etcdDir,
		"--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "kubebed=http://127.0.0.1:2380", "--log-level", "warn")
	if err != nil {
		return err
	}
	if err := c.waitHTTP(ctx, etcd, "http://127.0.0.1:2379/health", ""); err != nil {
		return err
	}
	cp := c.ControlPlane.IP.String()
	api, err := c.spawn("kube-apiserver", nil, filepath.Join(c.bin, "kube-apiserver"),
		"--etcd-servers=http://127.0.0.1:2379",
		"--bind-address="+cp, "--advertise-address="+cp, "--secure-port=6443",
		"--tls-cert-file="+p.certFile, "--tls-private-key-file="+p.keyFile, "--client-ca-file="+p.caFile,
		"--token-auth-file="+p.tokensFile, "--authorization-mode=RBAC",
		"--service-account-key-file="+p.saPubFile, "--service-account-signing-key-file="+p.saKeyFile,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range="+ServiceCIDR, "--allow-privileged=true",
		"--enable-priority-and-fairness=false", "--profiling=false",
		"--kubelet-preferred-address-types=InternalIP,Hostname", "--v=1")
	if err != nil {
		return err
	}
	if err := c.waitHTTP(ctx, api, c.apiURL()+"/readyz", p.adminToken); err != nil {
		return err
	}
	if err := c.makeClients(); err != nil {
		return err
	}
	close(apiUp)
	kubeconfig := "--kubeconfig=" + c.Kubeconfig
	if _, err := c.spawn("kube-controller-manager", nil, filepath.Join(c.bin, "kube-controller-manager"),
		kubeconfig, "--authentication-kubeconfig="+c.Kubeconfig, "--authorization-kubeconfig="+c.Kubeconfig,
		"--leader-elect=false", "--root-ca-file="+p.caFile, "--controllers="+strings.Join(controllers, ","),
		"--bind-address=127.0.0.1", "--secure-port=10257", "--profiling=false", "--v=1"); err != nil {
		return err
	}
	_, err = c.spawn("kube-scheduler", nil, filepath.Join(c.bin, "kube-scheduler"),
		kubeconfig, "--authentication-kubeconfig="+c.Kubeconfig, "--authorization-kubeconfig="+c.Kubeconfig,
		"--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port=10259", "--profiling=false", "--v=1")
	return err
}

// waitControllers waits until kube-controller-manager and kube-scheduler
// are healthy and the default ServiceAccount exists (pods are refused
// before it does).
func (c *Cluster) waitControllers(ctx context.Context) error {
	for name, url := range map[string]string{
		"kube-controller-manager": "https://127.0.0.1:10257/healthz",
		"kube-scheduler":          "https://127.0.0.1:10259/healthz",
	} {
		if err := c.waitHTTP(ctx, c.daemon(name), url, ""); err != nil {
			return err
		}
	}
	return c.poll(ctx, "the default ServiceAccount", func() error {
		_, err := c.client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err
	})
}

// poll is testutil.Poll bounded by ctx, naming what it waited for. An
// error wrapping errDaemonExited ends it at once.
func (c *Cluster) poll(ctx context.Context, what string, cond func() error) error {
	var fatal error
	err := testutil.Poll(time.Until(deadline(ctx)), func() error {
		if ctx.Err() != nil {
			return nil // stop polling; reported below
		}
		err := cond()
		if errors.Is(err, errDaemonExited) {
			fatal = err
			return nil
		}
		return err
	})
	switch {
	case fatal != nil:
		err = fatal
	case err == nil:
		err = ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("waiting for %s: %w", what, err)
	}
	return nil
}

// waitHTTP polls url from inside the control plane's network namespace
// until it answers 200, failing early when d exits.
func (c *Cluster) waitHTTP(ctx context.Context, d *daemon, url, token string) error {
	hc := &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{
			DialContext:     c.dialControlPlane,
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // health only; the clients verify the CA
			Proxy:           nil,
		},
	}
	defer hc.CloseIdleConnections()
	return c.poll(ctx, d.name+" at "+url, func() error {
		if err := exited(d); err != nil {
			return err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		return nil
	})
}

// dialControlPlane dials addr from inside the control plane's network
// namespace: the socket is made on a thread in that namespace and keeps it.
// The cluster's clients use it, so they work from the test process, which
// stays in the machine's namespace.
func (c *Cluster) dialControlPlane(ctx context.Context, network, addr string) (net.Conn, error) {
	var conn net.Conn
	err := testutil.InNetNS(c.ControlPlane.NetNSPath(), func() error {
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, network, addr)
		return err
	})
	return conn, err
}
