package dns

import (
	"context"
	"math/rand/v2"
	"net"

	miekg "github.com/miekg/dns"
)

// ServeDNS answers one unpacked query (the slow path: TCP, and every UDP
// query the fast path declines). It implements miekg's Handler; tests drive
// it with a recording ResponseWriter.
func (s *Server) ServeDNS(w miekg.ResponseWriter, r *miekg.Msg) {
	s.stats.queries.Add(1)
	ctx, cancel := context.WithTimeout(s.baseCtx(), s.cfg.Timeout+s.cfg.Timeout/2)
	defer cancel()
	resp := s.respond(ctx, r, isUDP(w))
	if resp == nil {
		return
	}
	if err := w.WriteMsg(resp); err != nil {
		s.stats.errors.Add(1)
		s.log.Debug("write response", "client", w.RemoteAddr(), "err", err)
	}
}

func isUDP(w miekg.ResponseWriter) bool {
	_, tcp := w.RemoteAddr().(*net.TCPAddr)
	return !tcp
}

// respond computes the response to r, or nil for no response at all.
func (s *Server) respond(ctx context.Context, r *miekg.Msg, udp bool) *miekg.Msg {
	if r.Response {
		return nil
	}
	m := new(miekg.Msg)
	m.SetReply(r)
	m.RecursionAvailable = true
	opt := r.IsEdns0()
	if opt != nil {
		m.SetEdns0(ednsSize, false)
		if opt.Version() != 0 {
			m.Rcode = miekg.RcodeBadVers
			return m
		}
	}
	switch {
	case r.Opcode != miekg.OpcodeQuery:
		m.Rcode = miekg.RcodeNotImplemented
		s.stats.errors.Add(1)
		return m
	case len(r.Question) != 1:
		m.Rcode = miekg.RcodeFormatError
		s.stats.errors.Add(1)
		return m
	}
	q := r.Question[0]
	if q.Qclass == miekg.ClassINET {
		if ans, ok := s.zone().lookup(q.Name, q.Qtype); ok {
			s.stats.local.Add(1)
			if ans.rcode == miekg.RcodeNameError {
				s.stats.nxdomain.Add(1)
			}
			m.Authoritative = true
			m.Rcode = ans.rcode
			m.Answer = ans.answer
			m.Ns = ans.ns
			rand.Shuffle(len(m.Answer), func(i, j int) { m.Answer[i], m.Answer[j] = m.Answer[j], m.Answer[i] })
			return s.fit(m, r, udp)
		}
	}
	s.stats.forwarded.Add(1)
	up, err := s.forward(ctx, r)
	if err != nil {
		s.stats.servfail.Add(1)
		s.log.Debug("forward failed", "name", q.Name, "err", err)
		m.Rcode = miekg.RcodeServerFailure
		return m
	}
	up.Id = r.Id
	if opt == nil { // no OPT in a response to a query without one (RFC 6891)
		extra := up.Extra[:0]
		for _, rr := range up.Extra {
			if rr.Header().Rrtype != miekg.TypeOPT {
				extra = append(extra, rr)
			}
		}
		up.Extra = extra
	}
	if up.Rcode == miekg.RcodeNameError {
		s.stats.nxdomain.Add(1)
	}
	return s.fit(up, r, udp)
}

// fit truncates a UDP response to what the client accepts (the client
// retries over TCP when it sees the TC bit).
func (s *Server) fit(m, r *miekg.Msg, udp bool) *miekg.Msg {
	if !udp {
		return m
	}
	size := miekg.MinMsgSize
	if opt := r.IsEdns0(); opt != nil {
		size = max(size, int(opt.UDPSize()))
	}
	m.Truncate(size)
	return m
}
