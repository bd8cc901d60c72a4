package main

// ping: ICMP echo at a fixed interval over a raw socket, counting replies.
// It is meant for measuring an outage (a rollout of the network plugin):
// the sender never waits for replies, each request is matched to its reply
// by sequence number, a reply later than -W counts as lost, and maxgap is
// the longest time without a reply.

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// pinger holds the counts; mu guards following.
type pinger struct {
	mu        sync.Mutex
	sent      int
	received  int
	sentAt    map[uint16]time.Time // outstanding requests by sequence number
	start     time.Time            // first request
	lastReply time.Time            // zero until the first reply
	lastSent  time.Time
	maxGap    time.Duration
}

func (p *pinger) line() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lineLocked()
}

func (p *pinger) lineLocked() string {
	return fmt.Sprintf("sent=%d received=%d lost=%d maxgap=%s\n", p.sent, p.received, p.sent-p.received, p.maxGap.Round(time.Millisecond))
}

func (p *pinger) reply(seq uint16, now time.Time, wait time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.sentAt[seq]
	if !ok || now.Sub(t) > wait {
		return
	}
	delete(p.sentAt, seq)
	p.received++
	from := p.lastReply
	if from.IsZero() {
		from = p.start
	}
	p.maxGap = max(p.maxGap, now.Sub(from))
	p.lastReply = now
}

// finish accounts for an outage still going on at the end: the requests
// after the last reply all went unanswered.
func (p *pinger) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	from := p.lastReply
	if from.IsZero() {
		from = p.start
	}
	if len(p.sentAt) > 0 && p.lastSent.After(from) {
		p.maxGap = max(p.maxGap, p.lastSent.Sub(from))
	}
}

func ping(args []string) error {
	fs := flag.NewFlagSet("ping", flag.ContinueOnError)
	interval := fs.Duration("i", 10*time.Millisecond, "interval between requests")
	count := fs.Int("c", 0, "requests to send (0: until SIGTERM/SIGINT)")
	wait := fs.Duration("W", time.Second, "a reply later than this is lost")
	out := fs.String("o", "", "file rewritten with the counts every 100 ms")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: testbox ping [-i 10ms] [-c N] [-W 1s] [-o FILE] IP")
	}
	dst := net.ParseIP(fs.Arg(0)).To4()
	if dst == nil {
		return fmt.Errorf("ping: %q is not an IPv4 address", fs.Arg(0))
	}
	conn, err := icmp.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		return fmt.Errorf("ping: raw socket (needs CAP_NET_RAW): %w", err)
	}
	defer conn.Close()
	var idb [2]byte
	_, _ = rand.Read(idb[:])
	id := int(binary.BigEndian.Uint16(idb[:]))
	p := &pinger{sentAt: map[uint16]time.Time{}}

	go func() { // replies
		buf := make([]byte, 1500)
		for {
			n, peer, err := conn.ReadFrom(buf)
			if err != nil {
				return // closed
			}
			now := time.Now()
			if ip, ok := peer.(*net.IPAddr); !ok || !ip.IP.Equal(dst) {
				continue
			}
			m, err := icmp.ParseMessage(1, buf[:n])
			if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
				continue
			}
			if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id {
				p.reply(uint16(e.Seq), now, *wait)
			}
		}
	}()
	stop := stopSignal()
	done := make(chan struct{})
	var writer sync.WaitGroup
	if *out != "" {
		writer.Add(1)
		go func() {
			defer writer.Done()
			t := time.NewTicker(100 * time.Millisecond)
			defer t.Stop()
			for {
				writeFile(*out, p.line())
				select {
				case <-done:
					return
				case <-t.C:
				}
			}
		}()
	}

	tick := time.NewTicker(*interval)
	defer tick.Stop()
	payload := make([]byte, 32)
sending:
	for i := 0; *count == 0 || i < *count; i++ {
		seq := uint16(i)
		b, err := (&icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: int(seq), Data: payload}}).Marshal(nil)
		if err != nil {
			return err
		}
		now := time.Now()
		p.mu.Lock()
		if p.start.IsZero() {
			p.start = now
		}
		p.sentAt[seq] = now
		p.sent++
		p.lastSent = now
		for s, t := range p.sentAt { // forget the lost ones (and never confuse a wrapped seq)
			if now.Sub(t) > *wait {
				delete(p.sentAt, s)
			}
		}
		p.mu.Unlock()
		// A send error (no route while the network is reconfigured) is a loss, not a failure.
		_, _ = conn.WriteTo(b, &net.IPAddr{IP: dst})
		select {
		case <-stop:
			break sending
		case <-tick.C:
		}
	}
	// The last replies: wait up to -W for the outstanding requests.
	deadline := time.Now().Add(*wait)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		outstanding := 0
		for _, t := range p.sentAt {
			if time.Since(t) <= *wait {
				outstanding++
			}
		}
		p.mu.Unlock()
		if outstanding == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.finish()
	close(done)
	writer.Wait()
	line := p.line()
	if *out != "" {
		writeFile(*out, line)
	}
	fmt.Print(line)
	return nil
}

// writeFile replaces file with s atomically (a reader never sees half).
func writeFile(file, s string) {
	tmp := filepath.Join(filepath.Dir(file), "."+filepath.Base(file)+".tmp")
	if os.WriteFile(tmp, []byte(s), 0o644) == nil {
		_ = os.Rename(tmp, file)
	}
}
