package router

import (
	"context"
	"fmt"

	"github.com/weftmesh/weft/router/wg"
)

// defaultWGFactory creates or adopts the device through router/wg (kernel
// WireGuard when the module exists, else the userspace datapath process).
func defaultWGFactory(ctx context.Context, cfg WGDeviceConfig) (WGDevice, error) {
	return newWGDevice(ctx, cfg, func(fn func() error) error { return fn() })
}

// NetNSWGFactory is a WGFactory that creates the device inside the network
// namespace of k (the userspace datapath process inherits it) and runs every
// device operation there.
func NetNSWGFactory(k *NetlinkKernel) WGFactory {
	return func(ctx context.Context, cfg WGDeviceConfig) (WGDevice, error) {
		return newWGDevice(ctx, cfg, k.Do)
	}
}

func newWGDevice(ctx context.Context, cfg WGDeviceConfig, do func(func() error) error) (WGDevice, error) {
	wc := wg.DefaultConfig()
	wc.Name, wc.MTU, wc.Logger = cfg.Name, cfg.MTU, cfg.Logger
	wc.ExternalDatapath = cfg.ExternalDatapath
	if len(cfg.DatapathCommand) > 0 {
		wc.DatapathCommand = cfg.DatapathCommand
	}
	var d *wg.Device
	err := do(func() error {
		var err error
		d, err = wg.Ensure(ctx, wc)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("wg ensure %s: %w", cfg.Name, err)
	}
	return &wgDevice{d: d, do: do}, nil
}

// wgDevice adapts *wg.Device to WGDevice (the peer types are the consumer's).
type wgDevice struct {
	d  *wg.Device
	do func(func() error) error
}

func (w *wgDevice) Configure(privateKey string, listenPort int, peers []WGPeer) error {
	ps := make([]wg.Peer, len(peers))
	for i, p := range peers {
		ps[i] = wg.Peer{PublicKey: p.PublicKey, Endpoint: p.Endpoint, AllowedIPs: p.AllowedIPs, Keepalive: p.Keepalive}
	}
	return w.do(func() error { return w.d.Configure(privateKey, listenPort, ps) })
}

func (w *wgDevice) Stats() (map[string]WGPeerStats, error) {
	var st map[string]wg.PeerStats
	if err := w.do(func() error {
		var err error
		st, err = w.d.Stats()
		return err
	}); err != nil {
		return nil, err
	}
	out := make(map[string]WGPeerStats, len(st))
	for k, s := range st {
		out[k] = WGPeerStats{LastHandshake: s.LastHandshake, RxBytes: s.RxBytes, TxBytes: s.TxBytes, Endpoint: s.Endpoint}
	}
	return out, nil
}

func (w *wgDevice) Name() string  { return w.d.Name() }
func (w *wgDevice) Close() error  { return w.d.Close() }
func (w *wgDevice) Delete() error { return w.do(w.d.Delete) }
