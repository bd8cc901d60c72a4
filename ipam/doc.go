// Package ipam owns weft's pod address space: the address ring CRDT that
// divides the range (default 10.32.0.0/12) among peers, its safe first
// division (single-decree Paxos, or a fixed seed list), space donation
// between peers, safe reclaim of a dead peer's space (rmpeer), graceful
// handoff on leave, and the per-container allocations persisted in bbolt.
//
// It does not know gossip, routes or DNS: it consumes a Transport (the
// gossip channel implements it) and is fed membership by SetPeers. The ring
// it maintains (Ranges) is the routing table the router programs.
//
//	a, _ := ipam.New(cfg, channel)         // cfg from ipam.DefaultConfig()
//	go a.Run(ctx)                          // bootstrap, retries, re-broadcast
//	a.SetPeers(mesh.Peers())               // on every membership change
//	addr, _ := a.Allocate(ctx, containerID) // e.g. 10.32.0.5/12
//	routes := a.Ranges()                    // owner -> CIDRs
package ipam
