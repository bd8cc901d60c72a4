// Package gossip owns membership and replicated state transport for weft:
// it runs hashicorp/memberlist (LAN profile, failure detection, encryption
// keyed by the cluster secret), publishes this peer's metadata in memberlist
// node meta, keeps a table of every peer ever seen with its liveness, and
// carries named replicated-state channels for ipam and dns: small deltas by
// epidemic broadcast (every peer that learns something new forwards it,
// epidemic.go), a fixed-interval digest of every channel's and of the
// membership's summary that repairs only what differs (antientropy.go,
// membership.go), the full state in the join push-pull, unicast by TCP.
//
// It does not know what the channels carry, nor anything of addresses,
// routes or DNS: subsystems plug in through the Handler interface.
//
//	m, _ := gossip.New(cfg)                        // cfg from gossip.DefaultConfig()
//	ring := m.Channel("ipam", allocator)           // allocator implements gossip.Handler
//	go m.Run(ctx)
//	m.Join([]string{"192.168.1.10:6783"})
//	ring.Broadcast(delta)
package gossip
