package daemon

import (
	"github.com/weftmesh/weft/dns"
	"github.com/weftmesh/weft/gossip"
	"github.com/weftmesh/weft/ipam"
)

// Mesh returns the peer's gossip mesh, for in-process harnesses (the scale
// simulator, internal/sim) that observe many peers. Read only: the daemon
// owns it.
func (d *Daemon) Mesh() *gossip.Mesh { return d.mesh }

// Allocator returns the peer's IPAM allocator (read only, as Mesh).
func (d *Daemon) Allocator() *ipam.Allocator { return d.alloc }

// DNS returns the peer's DNS server, nil with NoDNS (read only, as Mesh).
func (d *Daemon) DNS() *dns.Server { return d.dns }
