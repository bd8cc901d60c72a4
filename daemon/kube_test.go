package daemon

import (
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/weftmesh/weft/kube"
	"github.com/weftmesh/weft/kube/kubefake"
)

func fakeNode(name, ip string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if ip != "" {
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}
	}
	return n
}

// kubeDaemon is a Daemon with only what startKube reads, against a fake
// API server holding objs.
func kubeDaemon(cfg Config, objs ...runtime.Object) *Daemon {
	cs := fake.NewClientset(objs...)
	cfg.Kubernetes = true
	cfg.Kube = func(kc *kube.Config) { kc.API = kubefake.New(cs) }
	return &Daemon{cfg: cfg, log: slog.New(slog.DiscardHandler)}
}

// TestStartKube: what New learns from the API server before it builds
// anything.
func TestStartKube(t *testing.T) {
	nodes := []runtime.Object{fakeNode("n1", "192.168.79.11"), fakeNode("n2", "192.168.79.12"), fakeNode("n3", "192.168.79.13")}
	tests := []struct {
		name            string
		change          func(*Config)
		advertise, init string
		targets         []string
		consensus       bool
	}{
		{"defaults", nil, "192.168.79.12", "consensus=3", []string{"192.168.79.11", "192.168.79.13"}, true},
		{"--advertise wins", func(c *Config) { c.Advertise = "10.1.1.2" }, "10.1.1.2", "consensus=3", []string{"192.168.79.11", "192.168.79.13"}, true},
		{"--ipalloc-init wins", func(c *Config) { c.IPAllocInit = "seed=n1" }, "192.168.79.12", "seed=n1", []string{"192.168.79.11", "192.168.79.13"}, false},
	}
	for _, tt := range tests {
		cfg := DefaultConfig()
		cfg.Name = "n2"
		if tt.change != nil {
			tt.change(&cfg)
		}
		d := kubeDaemon(cfg, nodes...)
		if err := d.startKube(); err != nil {
			t.Fatalf("%s: startKube: %v", tt.name, err)
		}
		if d.cfg.Advertise != tt.advertise || d.cfg.IPAllocInit != tt.init || d.kube.consensus != tt.consensus || d.kube.startNodes != 3 {
			t.Errorf("%s: startKube set advertise %q, ipalloc-init %q, consensus %v, %d nodes; want %q, %q, %v, 3",
				tt.name, d.cfg.Advertise, d.cfg.IPAllocInit, d.kube.consensus, d.kube.startNodes, tt.advertise, tt.init, tt.consensus)
		}
		if got := d.kubeTargetsNow(); !cmp.Equal(got, tt.targets) {
			t.Errorf("%s: targets %v; want %v", tt.name, got, tt.targets)
		}
	}
}

func TestStartKubeGivesUp(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Name, cfg.KubeStartTimeout = "h9", 1500*time.Millisecond
	d := kubeDaemon(cfg, fakeNode("n1", "192.168.79.11"))
	start := time.Now()
	err := d.startKube()
	if !errors.Is(err, kube.ErrNoNode) {
		t.Errorf("startKube without our Node = %v; want ErrNoNode (not the deadline)", err)
	}
	if took := time.Since(start); took < cfg.KubeStartTimeout || took > 10*time.Second {
		t.Errorf("startKube gave up after %v; want the start timeout %v", took, cfg.KubeStartTimeout)
	}
}
