// Package nflog reads packets that netfilter logs to an NFLOG group
// (nftables `log group N`), over nfnetlink_log: it binds the group in the
// caller's network namespace, asks for the first bytes of each packet,
// and hands over each logged packet's prefix and bytes. It does not know
// what the prefix means or parse the packet; the daemon does. It is the
// library go-nflog would be, on github.com/mdlayher/netlink, which weft
// already links (the module proxy has no go-nflog).
//
//	c, err := nflog.Open(nflog.Config{Group: 6784, CopyRange: 128})
//	defer c.Close()                    // also ends a blocked Read
//	pkts, err := c.Read()              // blocks; one netlink read's worth
//	fmt.Println(pkts[0].Prefix, len(pkts[0].Payload))
//
// One socket per group and namespace: the kernel refuses a second bind of
// a group (EBUSY) while the first socket is open, which is what a peer
// that is still running looks like to a second one.
package nflog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Netfilter's nfnetlink_log constants (linux/netfilter/nfnetlink_log.h).
const (
	subsysULOG = 4 // NFNL_SUBSYS_ULOG

	msgPacket = 0 // NFULNL_MSG_PACKET
	msgConfig = 1 // NFULNL_MSG_CONFIG

	attrCfgCmd     = 1 // NFULA_CFG_CMD
	attrCfgMode    = 2 // NFULA_CFG_MODE
	attrCfgNLBuf   = 3 // NFULA_CFG_NLBUFSIZ
	attrCfgTimeout = 4 // NFULA_CFG_TIMEOUT
	attrCfgQThresh = 5 // NFULA_CFG_QTHRESH

	cmdBind = 1 // NFULNL_CFG_CMD_BIND

	copyPacket = 2 // NFULNL_COPY_PACKET

	attrPacketHdr = 1  // NFULA_PACKET_HDR: hw protocol, hook
	attrTimestamp = 3  // NFULA_TIMESTAMP: seconds, microseconds
	attrInDev     = 4  // NFULA_IFINDEX_INDEV
	attrOutDev    = 5  // NFULA_IFINDEX_OUTDEV
	attrPayload   = 9  // NFULA_PAYLOAD
	attrPrefix    = 10 // NFULA_PREFIX
)

// Config says which group to bind and how.
type Config struct {
	Group     uint16 // NFLOG group (nftables `log group N`)
	CopyRange uint16 // bytes of each packet to copy; headers need ~64
	// Flush is how long the kernel may batch packets before it sends
	// them (its resolution is 10 ms).
	Flush time.Duration
	// Batch is how many packets the kernel may batch (1 = send each at
	// once).
	Batch uint32
}

// DefaultConfig returns the configuration for weft's policy drops.
func DefaultConfig() Config {
	return Config{
		Group:     6784,                   // policy.DefaultConfig().LogGroup
		CopyRange: 128,                    // bytes: IPv4 options, TCP/UDP ports
		Flush:     100 * time.Millisecond, // a drop shows within a tenth of a second
		Batch:     16,                     // packets
	}
}

// Packet is one logged packet.
type Packet struct {
	Prefix  string    // the rule's log prefix
	Payload []byte    // the packet from its network header, at most CopyRange bytes
	Time    time.Time // when the kernel logged it; zero when it did not say
	InDev   uint32    // ifindex it came in on; 0 = none
	OutDev  uint32    // ifindex it would have gone out on; 0 = none
	Proto   uint16    // the link-layer protocol (EtherType), e.g. 0x0800 for IPv4
}

// Conn is a socket bound to one NFLOG group. Read from one goroutine;
// Close may be called from any.
type Conn struct {
	nl    *netlink.Conn
	group uint16
}

// ErrBusy: another socket has the group (another process reads it).
var ErrBusy = errors.New("nflog group is bound by another socket")

// Open binds cfg.Group in the caller's network namespace.
func Open(cfg Config) (*Conn, error) {
	nl, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, fmt.Errorf("nflog: dial netfilter netlink: %w", err)
	}
	c := &Conn{nl: nl, group: cfg.Group}
	// ENOBUFS (the reader fell behind) is reported, not fatal.
	_ = nl.SetOption(netlink.NoENOBUFS, false)
	ticks := uint32(cfg.Flush / (10 * time.Millisecond))
	steps := []struct {
		what  string
		attrs func(ae *netlink.AttributeEncoder)
	}{
		{"bind", func(ae *netlink.AttributeEncoder) { ae.Bytes(attrCfgCmd, []byte{cmdBind}) }},
		{"copy mode", func(ae *netlink.AttributeEncoder) {
			b := make([]byte, 6)
			binary.BigEndian.PutUint32(b, uint32(cfg.CopyRange))
			b[4] = copyPacket
			ae.Bytes(attrCfgMode, b)
		}},
		{"flush timeout", func(ae *netlink.AttributeEncoder) { ae.Uint32(attrCfgTimeout, ticks) }},
		{"batch", func(ae *netlink.AttributeEncoder) { ae.Uint32(attrCfgQThresh, max(1, cfg.Batch)) }},
	}
	for _, s := range steps {
		if err := c.config(s.attrs); err != nil {
			nl.Close()
			if errors.Is(err, unix.EBUSY) {
				return nil, fmt.Errorf("nflog: %s group %d: %w", s.what, cfg.Group, ErrBusy)
			}
			return nil, fmt.Errorf("nflog: %s group %d: %w", s.what, cfg.Group, err)
		}
	}
	return c, nil
}

// config sends one configuration message for the group and waits for
// its acknowledgement.
func (c *Conn) config(attrs func(ae *netlink.AttributeEncoder)) error {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	attrs(ae)
	b, err := ae.Encode()
	if err != nil {
		return err
	}
	hdr := []byte{unix.AF_UNSPEC, 0 /* NFNETLINK_V0 */, 0, 0}
	binary.BigEndian.PutUint16(hdr[2:], c.group)
	_, err = c.nl.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(subsysULOG<<8 | msgConfig), Flags: netlink.Request | netlink.Acknowledge},
		Data:   append(hdr, b...),
	})
	return err
}

// Read blocks until the kernel sends logged packets and returns them.
// After Close it returns an error.
func (c *Conn) Read() ([]Packet, error) {
	msgs, err := c.nl.Receive()
	if err != nil {
		return nil, fmt.Errorf("nflog: receive: %w", err)
	}
	var out []Packet
	for _, m := range msgs {
		if m.Header.Type != netlink.HeaderType(subsysULOG<<8|msgPacket) {
			continue
		}
		p, err := Parse(m.Data)
		if err != nil {
			continue // a message we cannot read is one log line lost, not a reason to stop
		}
		out = append(out, p)
	}
	return out, nil
}

// Close closes the socket, which also unbinds the group (the kernel drops
// a released socket's instances); a blocked Read returns. It sends no
// unbind request: that would wait for the lock that a blocked Read holds
// on the connection, and Close would never return (a peer stopped with
// SIGTERM hung until the kubelet killed it 30 s later).
func (c *Conn) Close() error {
	return c.nl.Close()
}

// Parse decodes one NFULNL_MSG_PACKET body: the nfgenmsg header, then
// attributes. It never panics on bad input.
func Parse(b []byte) (Packet, error) {
	var p Packet
	if len(b) < 4 {
		return p, fmt.Errorf("nflog: message of %d bytes: shorter than its header", len(b))
	}
	ad, err := netlink.NewAttributeDecoder(b[4:])
	if err != nil {
		return p, fmt.Errorf("nflog: attributes: %w", err)
	}
	ad.ByteOrder = binary.BigEndian
	for ad.Next() {
		data := ad.Bytes()
		switch ad.Type() {
		case attrPacketHdr:
			if len(data) >= 2 {
				p.Proto = binary.BigEndian.Uint16(data)
			}
		case attrTimestamp:
			if len(data) >= 16 {
				sec, usec := binary.BigEndian.Uint64(data), binary.BigEndian.Uint64(data[8:])
				if sec < 1<<40 && usec < 1e6 {
					p.Time = time.Unix(int64(sec), int64(usec)*1000)
				}
			}
		case attrInDev:
			if len(data) >= 4 {
				p.InDev = binary.BigEndian.Uint32(data)
			}
		case attrOutDev:
			if len(data) >= 4 {
				p.OutDev = binary.BigEndian.Uint32(data)
			}
		case attrPayload:
			p.Payload = data
		case attrPrefix:
			for i, c := range data {
				if c == 0 {
					data = data[:i]
					break
				}
			}
			p.Prefix = string(data)
		}
	}
	if err := ad.Err(); err != nil {
		return p, fmt.Errorf("nflog: attributes: %w", err)
	}
	return p, nil
}
