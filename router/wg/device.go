package wg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Device is a handle on a running WireGuard device (kernel or the userspace
// datapath process). Its methods are safe for concurrent use. Closing the
// handle leaves the device running.
type Device struct {
	cfg       Config
	userspace bool
	logger    *slog.Logger

	mu     sync.Mutex // guards following
	client *wgctrl.Client
}

// Ensure returns a handle on the WireGuard device cfg.Name in the calling
// thread's network namespace, creating the device if needed: a kernel
// WireGuard link when the module exists (and !cfg.ForceUserspace),
// otherwise the userspace datapath process, started detached with
// cfg.DatapathCommand unless one already answers on the UAPI socket. It
// waits until wgctrl sees the device and brings the link up.
func Ensure(ctx context.Context, cfg Config) (*Device, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "wg", "iface", cfg.Name)
	client, err := wgctrl.New()
	if err != nil {
		return nil, fmt.Errorf("wg ensure %s: open wgctrl: %w", cfg.Name, err)
	}
	d := &Device{cfg: cfg, logger: logger, client: client}
	kernel := false
	if !cfg.ForceUserspace {
		if kernel, err = ensureKernel(cfg, logger); err != nil {
			client.Close()
			return nil, err
		}
	}
	if !kernel {
		d.userspace = true
		if err := d.ensureUserspace(ctx); err != nil {
			client.Close()
			return nil, err
		}
	}
	if err := linkUp(cfg.Name); err != nil {
		client.Close()
		return nil, err
	}
	return d, nil
}

// Name returns the interface name.
func (d *Device) Name() string { return d.cfg.Name }

// Userspace reports whether the device is served by the wireguard-go
// datapath process (false: kernel WireGuard).
func (d *Device) Userspace() bool { return d.userspace }

// Configure makes the device's private key, listen port and peers equal to
// the arguments, changing only the difference: unchanged peers keep their
// sessions, stale peers are removed. listenPort 0 keeps the current port.
func (d *Device) Configure(privateKey string, listenPort int, peers []Peer) error {
	want, err := parseDesired(privateKey, listenPort, peers)
	if err != nil {
		return fmt.Errorf("wg configure %s: %w", d.cfg.Name, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.client == nil {
		return fmt.Errorf("wg configure %s: %w", d.cfg.Name, errClosed)
	}
	cur, err := d.client.Device(d.cfg.Name)
	if err != nil {
		return fmt.Errorf("wg configure %s: read device: %w", d.cfg.Name, err)
	}
	cfg, changed := diff(cur, want)
	if !changed {
		return nil
	}
	d.logger.Debug("configure", "privateKey", cfg.PrivateKey != nil, "listenPort", cfg.ListenPort != nil, "peerChanges", len(cfg.Peers))
	if err := d.client.ConfigureDevice(d.cfg.Name, cfg); err != nil {
		return fmt.Errorf("wg configure %s: %w", d.cfg.Name, err)
	}
	return nil
}

// Stats returns each peer's handshake time, byte counters and current
// endpoint, keyed by base64 public key.
func (d *Device) Stats() (map[string]PeerStats, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.client == nil {
		return nil, fmt.Errorf("wg stats %s: %w", d.cfg.Name, errClosed)
	}
	dev, err := d.client.Device(d.cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("wg stats %s: %w", d.cfg.Name, err)
	}
	out := make(map[string]PeerStats, len(dev.Peers))
	for _, p := range dev.Peers {
		out[p.PublicKey.String()] = PeerStats{
			LastHandshake: p.LastHandshakeTime,
			RxBytes:       p.ReceiveBytes,
			TxBytes:       p.TransmitBytes,
			Endpoint:      fromUDPAddr(p.Endpoint),
		}
	}
	return out, nil
}

// Close releases the wgctrl handle. The device keeps running.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.client == nil {
		return nil
	}
	err := d.client.Close()
	d.client = nil
	if err != nil {
		return fmt.Errorf("wg close %s: %w", d.cfg.Name, err)
	}
	return nil
}

// Delete removes the device: the kernel link, or for userspace the
// datapath process (SIGTERM to the pid in its pidfile, or removal of its
// UAPI socket), waiting until the process, link and socket are gone. It
// also releases the handle.
func (d *Device) Delete() error {
	cerr := d.Close()
	var err error
	if d.userspace {
		err = stopDatapath(d.cfg.Name, d.cfg.StartTimeout, d.logger)
	} else {
		err = deleteKernel(d.cfg.Name)
	}
	return errors.Join(err, cerr)
}

var errClosed = errors.New("device handle closed")

// linkUp sets the link up (idempotent).
func linkUp(name string) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("wg link up %s: %w", name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("wg link up %s: %w", name, err)
	}
	return nil
}

// poll calls cond every interval until it returns true, ctx ends or the
// deadline passes.
func poll(ctx context.Context, timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

// userspaceSeen reports whether wgctrl sees name as a userspace device.
func (d *Device) userspaceSeen() bool {
	dev, err := d.client.Device(d.cfg.Name)
	return err == nil && dev.Type == wgtypes.Userspace
}
