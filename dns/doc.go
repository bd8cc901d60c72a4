// Package dns owns weft's embedded DNS server and its replicated record set.
//
// Every peer runs one Server. It answers for the weft domain (default
// weft.local.) from a record set that is replicated over gossip as a CRDT:
// each record (name, address, owner peer, container ID) is changed only by
// its owner, removals are versioned tombstones, and the records of peers that
// are not alive are hidden. Names outside the domain are forwarded to the
// upstream resolvers. The package does not know about gossip, IPAM or the
// datapath: it consumes a Transport and is fed membership with SetPeers.
//
//	srv, _ := dns.New(cfg, channel) // cfg from dns.DefaultConfig(); channel broadcasts deltas
//	go srv.Run(ctx)                 // serves cfg.Listen until ctx is done
//	srv.SetListen([]string{"127.0.0.1:5353", "10.32.0.1:53"})
//	srv.Add("web", netip.MustParseAddr("10.32.0.7"), containerID)
//	srv.Lookup("web.weft.local.")   // [10.32.0.7], on every peer
package dns
