package nft

// The kernel side, through google/nftables: reading a table back into a
// State, and running Ops as one netlink batch (one nftables
// transaction: all or nothing, no packet sees a half state).
//
// The IR maps onto expressions as nft would emit them (nft --debug=netlink
// shows the same): ip saddr/daddr are loads at network header offset 12
// and 16, th dport a load at transport header offset 2, a concatenation
// puts its second field in register 9, a port range is two comparisons of
// big-endian bytes, ct state a bitwise and. An interval set holds a range
// as a start element and an end element one past it (none when the range
// reaches 255.255.255.255). Each rule carries its key (RuleKey) as its
// comment, which is how Read knows the rules again without decoding
// expressions.
//
// A full program of a thousand pods and policies is a batch of tens of
// thousands of messages, each acknowledged; the kernel queues all the
// acknowledgements before the first is read. The socket's buffers are
// forced (SO_SNDBUFFORCE, SO_RCVBUFFORCE, which need CAP_NET_ADMIN like
// everything here) to fit the batch, as nft itself does.

import (
	"fmt"
	"os"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// NetlinkConn is the real Conn. Close releases its namespace handle.
type NetlinkConn struct {
	ns *os.File // the target network namespace; nil = the caller's
}

var _ Conn = (*NetlinkConn)(nil)

// NewNetlinkConn returns a Conn for the network namespace at netnsPath
// ("" = the current one: the host's, for the daemon).
func NewNetlinkConn(netnsPath string) (*NetlinkConn, error) {
	k := &NetlinkConn{}
	if netnsPath != "" {
		f, err := os.Open(netnsPath)
		if err != nil {
			return nil, fmt.Errorf("open netns %s: %w", netnsPath, err)
		}
		k.ns = f
	}
	return k, nil
}

// Close releases the namespace handle.
func (k *NetlinkConn) Close() error {
	if k.ns == nil {
		return nil
	}
	return k.ns.Close()
}

// conn opens a lasting nftables connection whose buffers fit n messages.
func (k *NetlinkConn) conn(n int) (*nftables.Conn, error) {
	buf := max(4<<20, n*2048)
	opts := []nftables.ConnOption{nftables.AsLasting(), nftables.WithSockOptions(func(c *netlink.Conn) error {
		return forceBuffers(c, buf)
	})}
	if k.ns != nil {
		opts = append(opts, nftables.WithNetNSFd(int(k.ns.Fd())))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables conn: %w", err)
	}
	return c, nil
}

// forceBuffers sets both socket buffers to n bytes, past the sysctl
// limits when allowed, else as far as they let.
func forceBuffers(c *netlink.Conn, n int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for _, o := range [][2]int{{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}, {unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}} {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[0], n) != nil {
				if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[1], n); e != nil && serr == nil {
					serr = e
				}
			}
		}
	}); err != nil {
		return err
	}
	return serr
}

func ipTable(name string) *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyIPv4, Name: name}
}
