package dns

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"time"

	miekg "github.com/miekg/dns"
)

// Forwarding: every question outside the zone goes to the upstream
// resolvers, one after the other, each with an equal share of the time
// left of Config.Timeout. A truncated UDP answer is asked again over TCP.
// SERVFAIL and REFUSED from an upstream count as failures (the next one is
// tried); when all fail the client gets SERVFAIL. Upstreams come from
// Config.Upstreams or from resolv.conf, which Run re-reads when it changes;
// an upstream that is one of our own listen addresses is skipped, so the
// server never forwards to itself.

// maxForwards bounds the queries being forwarded at once: miekg runs a
// goroutine per slow-path packet, and a flood of names to forward must not
// pile up goroutines waiting on upstreams.
const maxForwards = 1024

func (s *Server) forward(ctx context.Context, r *miekg.Msg) (*miekg.Msg, error) {
	select {
	case s.forwarding <- struct{}{}:
		defer func() { <-s.forwarding }()
	default:
		return nil, fmt.Errorf("forward %s: %w", r.Question[0].Name, errBusy)
	}
	ups := s.usableUpstreams()
	if len(ups) == 0 {
		return nil, errNoUpstream
	}
	deadline := time.Now().Add(s.cfg.Timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	q := r.Copy()
	var lastErr error
	for i, up := range ups {
		share := time.Until(deadline) / time.Duration(len(ups)-i)
		if share <= 0 {
			break
		}
		resp, err := s.exchange(ctx, q, up, share)
		if err == nil {
			return resp, nil
		}
		lastErr = err
	}
	if lastErr == nil {
		lastErr = context.DeadlineExceeded
	}
	return nil, fmt.Errorf("forward %s: %w", r.Question[0].Name, lastErr)
}

func (s *Server) exchange(ctx context.Context, q *miekg.Msg, up netip.AddrPort, timeout time.Duration) (*miekg.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	q.Id = miekg.Id()
	c := &miekg.Client{Net: "udp", Timeout: timeout, UDPSize: miekg.DefaultMsgSize}
	resp, _, err := c.ExchangeContext(ctx, q, up.String())
	if err == nil && resp.Truncated {
		c.Net = "tcp"
		resp, _, err = c.ExchangeContext(ctx, q, up.String())
	}
	if err != nil {
		return nil, fmt.Errorf("exchange with %s: %w", up, err)
	}
	if resp.Rcode == miekg.RcodeServerFailure || resp.Rcode == miekg.RcodeRefused {
		return nil, fmt.Errorf("exchange with %s: %s", up, miekg.RcodeToString[resp.Rcode])
	}
	return resp, nil
}

// usableUpstreams returns the upstreams minus our own listen addresses.
func (s *Server) usableUpstreams() []netip.AddrPort {
	ups := *s.upstreams.Load()
	own := *s.bound.Load()
	out := make([]netip.AddrPort, 0, len(ups))
	for _, u := range ups {
		self := slices.ContainsFunc(own, func(l netip.AddrPort) bool {
			return l == u || (l.Port() == u.Port() && l.Addr().IsUnspecified() && (u.Addr().IsLoopback() || u.Addr().IsUnspecified()))
		})
		if !self {
			out = append(out, u)
		}
	}
	return out
}

// resolvConf is what we know of the resolv.conf file, to notice changes.
type resolvConf struct {
	mod  time.Time
	size int64
}

// loadResolvConf re-reads resolv.conf when it changed since last and
// installs its nameservers as upstreams. It reports whether it reloaded.
func (s *Server) loadResolvConf(last *resolvConf) (bool, error) {
	if len(s.cfg.Upstreams) > 0 {
		return false, nil
	}
	fi, err := os.Stat(s.cfg.ResolvConf)
	if err != nil {
		return false, fmt.Errorf("stat %s: %w", s.cfg.ResolvConf, err)
	}
	if fi.ModTime().Equal(last.mod) && fi.Size() == last.size {
		return false, nil
	}
	cc, err := miekg.ClientConfigFromFile(s.cfg.ResolvConf)
	if err != nil {
		return false, fmt.Errorf("read %s: %w", s.cfg.ResolvConf, err)
	}
	var ups []netip.AddrPort
	for _, srv := range cc.Servers {
		ap, err := parseHostPort(srv, 53)
		if err != nil {
			s.log.Warn("ignoring nameserver", "file", s.cfg.ResolvConf, "nameserver", srv, "err", err)
			continue
		}
		ups = append(ups, ap)
	}
	s.upstreams.Store(&ups)
	*last = resolvConf{mod: fi.ModTime(), size: fi.Size()}
	s.log.Info("upstreams from resolv.conf", "file", s.cfg.ResolvConf, "upstreams", ups)
	return true, nil
}
