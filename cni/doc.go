// Package cni is weft's CNI plugin: ADD, DEL, CHECK, STATUS, GC and VERSION
// for CNI 0.4.0, 1.0.0 and 1.1.0. It owns the pod side of the datapath (the
// veth pair, the pod's address and default route) and asks the local weft
// peer for everything else — address, gateway, bridge, MTU, DNS — through
// package api/client over the peer's unix socket. It never imports the
// peer's subsystems (gossip, ipam, router, dns): it runs once per pod and
// must stay small and fast.
//
//	// cmd/weft-cni/main.go
//	func main() { cni.Main() }
//
//	// weft setup-cni
//	err := cni.Install("/usr/local/bin/weft-cni", "/opt/cni/bin", "/etc/cni/net.d")
//
// Releases the peer could not take because it was down are spooled in
// DATADIR/pending-release (see package cni/spool); the peer applies them on
// start.
package cni
