package daemon

// The kernel side of NetworkPolicy enforcement: the nftables connection
// (policy/nft over netlink), conntrack deletion (vishvananda/netlink), the
// NFLOG reader of dropped packets (internal/nflog) and the SCTP probe.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftmesh/weft/internal/nflog"
	"github.com/weftmesh/weft/policy"
	"github.com/weftmesh/weft/policy/nft"
)

// conntrackCutter deletes conntrack entries of the caller's network
// namespace.
type conntrackCutter struct{}

var _ flowCutter = conntrackCutter{}

// Cut walks the IPv4 conntrack table and deletes the entries deny
// judges. A Service's connection is one entry: the original direction
// goes to the Service address, the reply comes from the real backend, so
// the flow's destination is the reply's source (kube-proxy's DNAT, judged
// on the backend, as the datapath judges it).
func (conntrackCutter) Cut(deny func(flow) bool) (uint, error) {
	n, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, flowFilter(deny))
	if err != nil {
		return n, fmt.Errorf("conntrack delete: %w", err)
	}
	return n, nil
}

// flowFilter adapts deny to netlink's CustomConntrackFilter.
type flowFilter func(flow) bool

func (f flowFilter) MatchConntrackFlow(c *netlink.ConntrackFlow) bool {
	src, ok1 := netip.AddrFromSlice(c.Forward.SrcIP.To4())
	dst, ok2 := netip.AddrFromSlice(c.Reverse.SrcIP.To4())
	if !ok1 || !ok2 {
		return false
	}
	return f(flow{Src: src, Dst: dst, Port: c.Reverse.SrcPort, Proto: policy.Protocol(c.Forward.Protocol)})
}

// newNftConn opens the host namespace's nftables.
func newNftConn() (nft.Conn, error) { return nft.NewNetlinkConn("") }

// kernelHasSCTP reports whether the kernel speaks SCTP (the module is
// loaded or can be): an SCTP socket can be made.
func kernelHasSCTP() bool {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_SEQPACKET, unix.IPPROTO_SCTP)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}

// policyLogLoop reads the drops the policy chains log and records them,
// until ctx is done. A group another process holds is a warning, not a
// failure: enforcement does not need the log.
func (d *Daemon) policyLogLoop(ctx context.Context) error {
	ps := d.policy
	cfg := nflog.DefaultConfig()
	cfg.Group = ps.compile.LogGroup
	var c *nflog.Conn
	for {
		var err error
		if c, err = nflog.Open(cfg); err == nil {
			break
		}
		d.warnEvery("nflog", "network policy: cannot read dropped packets; retrying", "group", cfg.Group, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(5 * time.Second):
		}
	}
	done := make(chan struct{})
	defer func() { <-done }()
	go func() {
		defer close(done)
		<-ctx.Done()
		c.Close() // ends Read
	}()
	for {
		pkts, err := c.Read()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, unix.ENOBUFS) {
				continue // the kernel dropped log messages: some drops go unseen
			}
			d.warnEvery("nflog-read", "network policy: reading dropped packets", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
			continue
		}
		m, _ := ps.currentModel()
		for _, p := range pkts {
			ps.drops.Record(m, p.Prefix, p.Payload, p.Time)
		}
	}
}

// RemovePolicyTable deletes the NetworkPolicy table (`weft reset`).
func RemovePolicyTable() error {
	conn, err := nft.NewNetlinkConn("")
	if err != nil {
		return err
	}
	defer conn.Close()
	return nft.NewApplier(conn).Delete(policy.DefaultConfig().Table)
}
