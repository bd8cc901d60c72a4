// Package sim is weft's scale simulator: it runs N complete weft peers —
// the real daemon with its gossip mesh, IPAM ring, DNS server (its records;
// the API server is off, the harness calls the daemon's methods) and sync
// loop, and the router's reconcile loop on the fake kernel and
// WireGuard device of router/routertest — in one process, over an
// in-memory memberlist transport that offers latency, loss and partitions
// and counts every byte. It is the production code, not a model of it;
// only the kernel and the network are simulated.
//
// Tests and `make scale` run it in a testing/synctest bubble (bubble.go):
// virtual time, production timers.
//
// It owns the harness and its measurements (convergence, bytes per peer
// per second, CPU); it does not own any protocol. It is test and bench
// code: cmd/weft never imports it.
//
//	synctest.Test(t, func(t *testing.T) {  // opts.Bubble = true
//	c, _ := sim.NewCluster(opts)
//	defer c.Close()
//	c.Grow(200)                          // each peer launched with one random earlier PEER
//	took, err := c.WaitAgree(ctx)        // membership, ring and DNS agree everywhere
//	c.Kill(17); c.WaitDeadSeen(ctx, 17)  // a crash, seen by all
//	c.Partition(0.5); c.Heal()
package sim
