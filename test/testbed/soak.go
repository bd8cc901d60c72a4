package testbed

// What a long chaos soak needs of the bed besides hosts and pods: pod
// namespaces removed as soon as their pod is gone (a soak makes hundreds),
// a bounded ICMP prober whose every echo carries its own send time (so a
// lost echo can be blamed on the fault that was under way when it left),
// and a scan of a host's log for crashes and races.
//
//	p, err := testbed.StartProber(pod.NS, dst, 100*time.Millisecond, time.Second)
//	...
//	probes := p.Stop() // one Probe per echo sent, in order
//	err = bed.DelNamespace(pod.NS)
//	bad := h.LogProblems() // "panic:", "fatal error:", "DATA RACE" lines

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// DelNamespace deletes a namespace made by AddNamespace before the test
// ends (its cleanup then finds it gone and says nothing). Processes still
// inside keep the namespace alive until they exit.
func (b *Bed) DelNamespace(full string) error {
	if err := netns.DeleteNamed(full); err != nil {
		return fmt.Errorf("netns del %s: %w", full, err)
	}
	return nil
}

// logProblems are what must never appear in a peer's log.
var logProblems = []string{"panic:", "fatal error:", "DATA RACE"}

// LogProblems returns, for each panic, fatal runtime error or data race
// report in the host's log (every launch), the report: its first line and
// up to 40 lines after it, to the race detector's closing "=====" line.
func (h *Host) LogProblems() []string {
	lines := strings.Split(h.Log(), "\n")
	var out []string
	for i := 0; i < len(lines); i++ {
		if !slices.ContainsFunc(logProblems, func(p string) bool { return strings.Contains(lines[i], p) }) {
			continue
		}
		j := i + 1
		for j < len(lines) && j < i+40 && !strings.HasPrefix(lines[j], "==================") {
			j++
		}
		out = append(out, strings.Join(lines[i:j], "\n"))
		i = j
	}
	return out
}

// Probe is one ICMP echo request of a Prober.
type Probe struct {
	Sent time.Time
	RTT  time.Duration // 0 when lost
	Lost bool          // no reply within the prober's timeout (or the send failed)
}

// Prober sends an ICMP echo request from inside a namespace to one
// address every interval and records, per echo, when it left and whether
// its reply came back within timeout. The socket is a raw ICMP socket
// opened inside the namespace, so the kernel of the destination answers:
// nothing of the test sits on the path but the sender.
type Prober struct {
	conn     *icmp.PacketConn
	dst      *net.IPAddr
	id       int
	interval time.Duration
	timeout  time.Duration
	stop     chan struct{}
	wg       sync.WaitGroup

	mu     sync.Mutex // guards following
	probes []Probe
}

// proberID is the ICMP identifier of every prober's echoes; a raw socket
// sees only its own namespace's ICMP, and a pod has one prober.
const proberID = 0x5e7f

// StartProber starts probing dst from namespace ns (a name under
// /var/run/netns). Stop ends it.
func StartProber(ns string, dst netip.Addr, interval, timeout time.Duration) (*Prober, error) {
	p := &Prober{dst: &net.IPAddr{IP: dst.AsSlice()}, id: proberID, interval: interval, timeout: timeout, stop: make(chan struct{})}
	err := InNS(ns, func() error {
		var err error
		p.conn, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("prober in %s: %w", ns, err)
	}
	p.wg.Add(2)
	go p.send()
	go p.receive()
	return p, nil
}

func (p *Prober) send() {
	defer p.wg.Done()
	tick := time.NewTicker(p.interval)
	defer tick.Stop()
	for n := 0; ; n++ {
		msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: p.id, Seq: n & 0xffff, Data: []byte("weft soak probe")}}
		b, _ := msg.Marshal(nil)
		p.mu.Lock()
		p.probes = append(p.probes, Probe{Sent: time.Now()})
		if _, err := p.conn.WriteTo(b, p.dst); err != nil {
			p.probes[n].Lost = true
		}
		p.mu.Unlock()
		select {
		case <-p.stop:
			return
		case <-tick.C:
		}
	}
}

func (p *Prober) receive() {
	defer p.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, from, err := p.conn.ReadFrom(buf)
		if err != nil {
			return // closed by Stop
		}
		at := time.Now()
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
			continue
		}
		echo, ok := m.Body.(*icmp.Echo)
		if a, isIP := from.(*net.IPAddr); !ok || echo.ID != p.id || !isIP || !a.IP.Equal(p.dst.IP) {
			continue
		}
		p.mu.Lock()
		if last := len(p.probes) - 1; last >= 0 {
			// The newest echo whose sequence number (16 bits) matches.
			i := last - ((last - echo.Seq) & 0xffff)
			if i >= 0 && p.probes[i].RTT == 0 {
				p.probes[i].RTT = max(at.Sub(p.probes[i].Sent), time.Nanosecond)
			}
		}
		p.mu.Unlock()
	}
}

// Stop stops sending, waits timeout for the last replies, closes the
// socket and returns every echo sent. A reply later than timeout counts
// as lost.
func (p *Prober) Stop() []Probe {
	close(p.stop)
	time.Sleep(p.timeout) // the last echoes' replies may still be on their way
	p.conn.Close()
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	out := append([]Probe(nil), p.probes...)
	for i := range out {
		if out[i].RTT == 0 || out[i].RTT > p.timeout {
			out[i].Lost, out[i].RTT = true, 0
		}
	}
	return out
}
