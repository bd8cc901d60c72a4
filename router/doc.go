// Package router owns weft's datapath on one host: the bridge that local pods
// hang off, the routes that make every peer's address ranges reachable (the
// IPAM ring is the routing table), the tunnel devices (WireGuard through
// router/wg, kernel VXLAN), plain routes for same-subnet peers, the egress
// masquerade (nftables table "weft"), the MTU arithmetic, the reset that
// removes all of it, and relaying: routes around broken links through
// other peers, a pure computation over the links each peer reports broken
// (paths.go). It does not decide who owns which range (ipam), who is
// alive (gossip) or how pods are plumbed into the bridge (cni).
//
//	r, _ := router.New(router.Options{Logger: log})
//	cfg := router.DefaultConfig()
//	cfg.Range, cfg.BridgeAddr, cfg.Local, cfg.Peers = podRange, bridge, owned, peers
//	_ = r.Set(cfg)       // reconcile now; again on every change
//	go r.Run(ctx)        // debounce churn, resync drift every 10 s
//
// The kernel is reached only through the Kernel interface (operation-level:
// LinkEnsure, RouteReplace, NeighSet, ...), so the reconciliation logic is
// tested without root by comparing transcripts of operations
// (router/routertest), and against the real kernel in throwaway namespaces.
package router
