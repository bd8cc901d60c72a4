package routertest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/weftmesh/weft/router"
)

// WG is a recording fake of router.WGDevice. Its factory creates the link
// in a fake Kernel, as router/wg creates the real one.
type WG struct {
	kernel *Kernel

	mu      sync.Mutex // guards following
	name    string
	lines   []string
	exists  bool
	stats   map[string]router.WGPeerStats
	creates int
	last    string // the last Configure's line
	quiet   bool   // record no transcript (Quiet)
}

var _ router.WGDevice = (*WG)(nil)

// NewWG returns a fake WireGuard device that creates its link in k.
func NewWG(k *Kernel) *WG { return &WG{kernel: k, stats: map[string]router.WGPeerStats{}} }

// Factory returns a router.WGFactory handing out w.
func (w *WG) Factory() router.WGFactory {
	return func(_ context.Context, cfg router.WGDeviceConfig) (router.WGDevice, error) {
		w.mu.Lock()
		defer w.mu.Unlock()
		if !w.exists {
			w.kernel.AddLink(router.Link{Name: cfg.Name, Kind: "wireguard", MTU: 1420})
			w.exists = true
			w.creates++
			w.record(fmt.Sprintf("wg create %s mtu %d", cfg.Name, cfg.MTU))
		}
		w.name = cfg.Name
		return w, nil
	}
}

// SetStats sets what Stats returns.
func (w *WG) SetStats(s map[string]router.WGPeerStats) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stats = s
}

// Configured returns the line of the last Configure: the peers the device
// holds ("" before the first).
func (w *WG) Configured() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}

// Take returns the lines recorded since the last Take and forgets them.
func (w *WG) Take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	l := w.lines
	w.lines = nil
	return l
}

// Quiet stops recording the transcript (Take then returns nothing);
// Configured still returns the device's peers.
func (w *WG) Quiet() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.quiet, w.lines = true, nil
}

// record appends a transcript line unless quiet; w.mu is held.
func (w *WG) record(line string) {
	if !w.quiet {
		w.lines = append(w.lines, line)
	}
}

// Configure records one line per call with every peer.
func (w *WG) Configure(privateKey string, listenPort int, peers []router.WGPeer) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	ps := make([]string, len(peers))
	for i, p := range peers {
		as := make([]string, len(p.AllowedIPs))
		for j, a := range p.AllowedIPs {
			as[j] = a.String()
		}
		ps[i] = fmt.Sprintf("%s@%v allowed %s", p.PublicKey, p.Endpoint, strings.Join(as, ","))
	}
	slices.Sort(ps)
	w.last = fmt.Sprintf("wg configure %s port %d peers [%s]", w.name, listenPort, strings.Join(ps, "; "))
	w.record(w.last)
	return nil
}

// Stats returns what SetStats set.
func (w *WG) Stats() (map[string]router.WGPeerStats, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stats, nil
}

// Name returns the interface name.
func (w *WG) Name() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.name
}

// Close records nothing: handles only.
func (w *WG) Close() error { return nil }

// Delete removes the link.
func (w *WG) Delete() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.exists = false
	w.record("wg delete " + w.name)
	return w.kernel.LinkDelete(w.name)
}
