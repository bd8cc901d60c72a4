// Package wg owns weft's WireGuard device: it creates it, keeps it running
// across control-plane restarts, configures it through wgctrl and reads its
// per-peer statistics. It does not choose peers, addresses or routes: the
// router package decides those and sets the link's addresses and routes.
//
// Kernel WireGuard is used when the module exists; otherwise the device is an
// embedded wireguard-go device (TUN with GSO/GRO offloads, UAPI socket in
// /var/run/wireguard/NAME.sock) served by a separate long-lived process, the
// weft binary's hidden `weft datapath` subcommand, whose body is RunDatapath.
// Both kinds are configured with wgctrl, so `wg show NAME` works.
//
//	cfg := wg.DefaultConfig()
//	cfg.DatapathCommand = []string{"/usr/local/bin/weft", "datapath"}
//	dev, err := wg.Ensure(ctx, cfg) // starts or reuses the device
//	err = dev.Configure(privKey, 51820, []wg.Peer{{PublicKey: pub, Endpoint: ep, AllowedIPs: ranges}})
//	stats, err := dev.Stats()
//	dev.Close() // the device keeps forwarding; dev.Delete() removes it
package wg
