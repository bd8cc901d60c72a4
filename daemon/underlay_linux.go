package daemon

// The host facts of underlay mode: which device holds the peer's underlay
// address, its subnet and default gateway (rtnetlink), and the ARP probe
// (a raw AF_PACKET socket, RFC 5227).

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// underlayLink finds the device holding addr, addr with its subnet's
// length, and the gateway of a default route through that device (invalid
// when there is none).
func underlayLink(addr netip.Addr) (dev string, subnet netip.Prefix, gw netip.Addr, err error) {
	if !addr.Is4() || addr.IsUnspecified() {
		return "", netip.Prefix{}, netip.Addr{}, fmt.Errorf("this peer's underlay address %v is not a usable IPv4 address: pass --advertise", addr)
	}
	as, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return "", netip.Prefix{}, netip.Addr{}, fmt.Errorf("addr list: %w", err)
	}
	index := 0
	for _, a := range as {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || ip.Unmap() != addr {
			continue
		}
		ones, _ := a.Mask.Size()
		subnet, index = netip.PrefixFrom(addr, ones), a.LinkIndex
		break
	}
	if index == 0 {
		return "", netip.Prefix{}, netip.Addr{}, fmt.Errorf("no interface holds this peer's underlay address %v", addr)
	}
	l, err := netlink.LinkByIndex(index)
	if err != nil {
		return "", netip.Prefix{}, netip.Addr{}, fmt.Errorf("link %d: %w", index, err)
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: index, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err == nil {
		for _, r := range routes {
			if (r.Dst == nil || r.Dst.IP.IsUnspecified()) && r.Gw != nil {
				if g, ok := netip.AddrFromSlice(r.Gw); ok {
					gw = g.Unmap()
					break
				}
			}
		}
	}
	return l.Attrs().Name, subnet, gw, nil
}

// Probe timing (RFC 5227 asks for 3 probes over 1-2 s, then 2 s of
// listening; a pod start cannot wait that long, and a LAN machine answers
// an ARP request within milliseconds, so weft sends probeCount probes
// probeGap apart and listens for Config.UnderlayProbeWait in all).
const (
	probeCount = 2
	probeGap   = 50 * time.Millisecond
)

// arpProbe asks the LAN whether a holds a: it sends ARP probes on dev
// (sender address 0.0.0.0, so no machine's cache learns anything) and
// listens for an ARP packet whose sender is a. It returns the reason the
// address is taken ("" = free).
func (d *Daemon) arpProbe(ctx context.Context, dev string, a netip.Addr) (string, error) {
	return arpProbe(ctx, dev, a, d.cfg.UnderlayProbeWait)
}

func arpProbe(ctx context.Context, dev string, target netip.Addr, wait time.Duration) (string, error) {
	ifi, err := net.InterfaceByName(dev)
	if err != nil {
		return "", fmt.Errorf("interface %s: %w", dev, err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return "", fmt.Errorf("interface %s has no Ethernet address", dev)
	}
	proto := htons(unix.ETH_P_ARP)
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, int(proto))
	if err != nil {
		return "", fmt.Errorf("arp socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
		return "", fmt.Errorf("arp socket bind %s: %w", dev, err)
	}
	to := &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index, Halen: 6, Addr: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
	req := arpProbePacket(ifi.HardwareAddr, target)
	deadline := time.Now().Add(wait)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	sent := 0
	next := time.Now()
	buf := make([]byte, 128)
	for {
		now := time.Now()
		if sent < probeCount && !now.Before(next) {
			if err := unix.Sendto(fd, req, 0, to); err != nil {
				return "", fmt.Errorf("arp probe %s on %s: %w", target, dev, err)
			}
			sent++
			next = now.Add(probeGap)
		}
		if !now.Before(deadline) {
			return "", nil
		}
		until := deadline
		if sent < probeCount && next.Before(until) {
			until = next
		}
		ms := max(int(time.Until(until)/time.Millisecond), 1)
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(pfd, ms); err != nil && !errors.Is(err, unix.EINTR) {
			return "", fmt.Errorf("arp poll: %w", err)
		}
		for {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				break // EAGAIN: drained
			}
			if mac, ok := arpConflict(buf[:n], target, ifi.HardwareAddr); ok {
				return "answered ARP from " + mac.String(), nil
			}
		}
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// arpProbePacket is an ARP request for target from (mac, 0.0.0.0).
func arpProbePacket(mac net.HardwareAddr, target netip.Addr) []byte {
	p := make([]byte, 28)
	binary.BigEndian.PutUint16(p[0:], 1)      // Ethernet
	binary.BigEndian.PutUint16(p[2:], 0x0800) // IPv4
	p[4], p[5] = 6, 4
	binary.BigEndian.PutUint16(p[6:], 1) // request
	copy(p[8:14], mac)
	// sender IP 0.0.0.0 (p[14:18]), target MAC zero (p[18:24])
	t := target.As4()
	copy(p[24:28], t[:])
	return p
}

// arpConflict reports whether an ARP packet says another machine holds
// target (RFC 5227 2.1.1): its sender address is target, or it is another
// machine's probe for target. Our own probes (sender MAC ours) are not.
func arpConflict(p []byte, target netip.Addr, ours net.HardwareAddr) (net.HardwareAddr, bool) {
	if len(p) < 28 || binary.BigEndian.Uint16(p[0:]) != 1 || binary.BigEndian.Uint16(p[2:]) != 0x0800 || p[4] != 6 || p[5] != 4 {
		return nil, false
	}
	sha := net.HardwareAddr(append([]byte(nil), p[8:14]...))
	if sha.String() == ours.String() {
		return nil, false
	}
	spa := netip.AddrFrom4([4]byte(p[14:18]))
	tpa := netip.AddrFrom4([4]byte(p[24:28]))
	op := binary.BigEndian.Uint16(p[6:])
	switch {
	case spa == target:
		return sha, true
	case op == 1 && spa.IsUnspecified() && tpa == target:
		return sha, true // another machine probes for it now
	}
	return nil, false
}
