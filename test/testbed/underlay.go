package testbed

// Underlay (macvlan) pods and a packet capture on the switch, for the
// underlay tests: pods made by weft-cni with "mode": "macvlan", and an
// AF_PACKET reader on a switch port that shows what crosses the wire.
//
//	bed := testbed.New(t, 2)
//	plainNS, plainAddr := bed.AddInternet() // a machine running no weft
//	cap := bed.Capture(t, h1.SwitchPort())
//	p := h1.AddMacvlanPod(t, "a")
//	frames := cap.Frames()

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// MacvlanConfig is the network config of a macvlan pod on h; extra is
// spliced into the JSON object (e.g. `,"master":"eth0"`).
func (h *Host) MacvlanConfig(version, extra string) string {
	c := h.CNIConfig(version)
	return c[:len(c)-1] + `,"mode":"macvlan"` + extra + "}"
}

// AddMacvlanPod creates a pod namespace and runs CNI ADD in macvlan mode.
func (h *Host) AddMacvlanPod(t testing.TB, name string) *Pod {
	t.Helper()
	p, err := h.TryAddMacvlanPod(h.bed.AddNamespace(h.Name+name), name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TryAddMacvlanPod runs CNI ADD in macvlan mode for the existing namespace
// ns (safe from any goroutine).
func (h *Host) TryAddMacvlanPod(ns, name string) (*Pod, error) {
	p := &Pod{Host: h, NS: ns, ContainerID: h.bed.Prefix + "-" + h.Name + "-" + name}
	args := fmt.Sprintf("IgnoreUnknown=1;K8S_POD_NAME=%s;K8S_POD_NAMESPACE=%s", name, h.Name)
	out, err := h.CNI("ADD", p.ContainerID, "/var/run/netns/"+ns, "eth0", args, h.MacvlanConfig("1.0.0", ""))
	if err != nil {
		return nil, fmt.Errorf("CNI ADD macvlan %s on %s: %v: %s", name, h.Name, err, out)
	}
	if err := json.Unmarshal([]byte(out), &p.Result); err != nil {
		return nil, fmt.Errorf("CNI ADD result: %v: %s", err, out)
	}
	ips, _ := p.Result["ips"].([]any)
	if len(ips) == 0 {
		return nil, fmt.Errorf("CNI ADD result has no ips: %s", out)
	}
	p.Addr = netip.MustParsePrefix(ips[0].(map[string]any)["address"].(string))
	return p, nil
}

// MAC is the MAC of the pod's interface in the ADD result.
func (p *Pod) MAC() string {
	ifs, _ := p.Result["interfaces"].([]any)
	for _, i := range ifs {
		m, _ := i.(map[string]any)
		if s, _ := m["sandbox"].(string); s != "" {
			mac, _ := m["mac"].(string)
			return mac
		}
	}
	return ""
}

// DelMacvlan runs CNI DEL for a macvlan pod.
func (p *Pod) DelMacvlan() error {
	if out, err := p.Host.CNI("DEL", p.ContainerID, "/var/run/netns/"+p.NS, "eth0", "", p.Host.MacvlanConfig("1.0.0", "")); err != nil {
		return fmt.Errorf("CNI DEL macvlan %s: %v: %s", p.ContainerID, err, out)
	}
	return nil
}

// Frame is one Ethernet frame seen on a capture, decoded as far as the
// tests need: IPv4 addresses and protocol, the UDP destination port, and
// the inner frame of a VXLAN packet.
type Frame struct {
	Src, Dst  string // MACs
	EtherType uint16
	IPSrc     netip.Addr
	IPDst     netip.Addr
	Proto     uint8  // IPv4 protocol
	UDPDst    uint16 // UDP only
	Inner     *Frame // VXLAN (UDP 4789) only
}

// Capture reads every frame of one device until the test ends.
type Capture struct {
	fd     int
	mu     sync.Mutex // guards following
	frames []Frame
}

// Capture starts reading every frame on dev in the switch namespace.
func (b *Bed) Capture(t testing.TB, dev string) *Capture {
	t.Helper()
	c := &Capture{fd: -1}
	err := InNS(b.Switch, func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		proto := uint16(unix.ETH_P_ALL)<<8 | uint16(unix.ETH_P_ALL)>>8
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(proto))
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return err
		}
		// A read timeout lets the reader see the end of the test: closing
		// a socket does not wake a thread blocked reading it.
		tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			unix.Close(fd)
			return err
		}
		c.fd = fd
		return nil
	})
	if err != nil {
		t.Fatalf("capture on %s: %v", dev, err)
	}
	done, stop := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, _, err := unix.Recvfrom(c.fd, buf, 0)
			if err != nil {
				continue // timeout or EINTR
			}
			if f, ok := decodeFrame(buf[:n]); ok {
				c.mu.Lock()
				c.frames = append(c.frames, f)
				c.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-done
		unix.Close(c.fd)
	})
	return c
}

// Frames returns the frames seen so far.
func (c *Capture) Frames() []Frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Frame(nil), c.frames...)
}

// Reset forgets the frames seen so far.
func (c *Capture) Reset() {
	c.mu.Lock()
	c.frames = nil
	c.mu.Unlock()
}

func decodeFrame(b []byte) (Frame, bool) {
	if len(b) < 14 {
		return Frame{}, false
	}
	f := Frame{Dst: net.HardwareAddr(b[0:6]).String(), Src: net.HardwareAddr(b[6:12]).String(),
		EtherType: binary.BigEndian.Uint16(b[12:14])}
	ip := b[14:]
	if f.EtherType != 0x0800 || len(ip) < 20 {
		return f, true
	}
	ihl := int(ip[0]&0x0f) * 4
	f.Proto = ip[9]
	f.IPSrc = netip.AddrFrom4([4]byte(ip[12:16]))
	f.IPDst = netip.AddrFrom4([4]byte(ip[16:20]))
	if f.Proto == 17 && len(ip) >= ihl+8 {
		f.UDPDst = binary.BigEndian.Uint16(ip[ihl+2:])
		if f.UDPDst == 4789 && len(ip) >= ihl+16 {
			if in, ok := decodeFrame(ip[ihl+16:]); ok {
				f.Inner = &in
			}
		}
	}
	return f, true
}
