// Package apitest holds fakes of the api package's backend parts, which
// record their calls and return canned answers, and a browser check of the
// status page, for tests of api and of the daemon.
//
//	f := apitest.New()
//	srv, _ := api.New(cfg, f.Backends()) // or api.Backends{Addresses: f.Addresses}
//	go srv.Run(ctx)
//	apitest.CheckPage(t, "http://"+srv.HTTPAddr().String()+"/", 3, outDir)
package apitest

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"sync"

	"github.com/weftmesh/weft/api"
	"github.com/weftmesh/weft/api/client"
)

var (
	_ api.Reporter   = (*Reporter)(nil)
	_ api.Addresses  = (*Addresses)(nil)
	_ api.Names      = (*Names)(nil)
	_ api.Membership = (*Membership)(nil)
	_ api.Policies   = (*Policies)(nil)
)

// Fakes is one fake of each part, made by New, sharing one Recorder so that
// a test sees every call in order. Set the fakes' exported fields before
// serving: they are read without a lock. A method with a canned error
// still returns its canned value, which the server must not use.
type Fakes struct {
	*Recorder
	Reporter   *Reporter
	Addresses  *Addresses
	Names      *Names
	Membership *Membership
	Policies   *Policies
}

// New returns fakes that answer the three-peer mesh of Mesh: h1's pod
// web-0 is at 10.32.0.2, GC releases the pod api-7d9f, rmpeer reclaims a
// quarter of the range.
func New() *Fakes {
	rec := &Recorder{errs: map[string]error{}}
	return &Fakes{
		Recorder: rec,
		Reporter: &Reporter{Recorder: rec, Snapshot: *Mesh(),
			Counts: map[string]float64{"dns_queries_total": 1532, "reconcile_runs_total": 211, "reconcile_errors_total": 1}},
		Addresses: &Addresses{Recorder: rec, Released: []string{"9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b"}, Allocation: client.Allocation{
			Address: "10.32.0.2/12", Gateway: "10.32.0.1", Bridge: "weft", MTU: 1360,
			DNS: &client.PodDNS{Nameservers: []string{"10.32.0.1"}, Domain: "weft.local", Search: []string{"weft.local"}},
		}},
		Names:      &Names{Recorder: rec, Answer: []string{"10.32.0.2"}},
		Membership: &Membership{Recorder: rec, Reclaimed: 1 << 18},
		Policies:   &Policies{Recorder: rec, Report: *PolicyReport(), Drops: PolicyDrops()},
	}
}

// Backends serves every fake.
func (f *Fakes) Backends() api.Backends {
	return api.Backends{Reporter: f.Reporter, Addresses: f.Addresses, Names: f.Names, Membership: f.Membership, Policies: f.Policies}
}

// Recorder keeps the transcript of calls and the canned errors. Safe for
// concurrent use.
type Recorder struct {
	mu    sync.Mutex // guards following
	calls []string
	errs  map[string]error // by method name; nil = succeed
}

// SetError makes the named method (e.g. "Allocate") return err until it is
// set back to nil. A "Ready" error makes Ready answer not ready, with the
// error's text as the reason.
func (r *Recorder) SetError(method string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs[method] = err
}

// Take returns the calls since the last Take, one line each: the method
// and its arguments as %+v, e.g. "Release c1", "Allocate {ID:c1 IfName: Pod:}".
func (r *Recorder) Take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.calls
	r.calls = nil
	return c
}

// record appends a call and returns the method's canned error.
func (r *Recorder) record(method string, args ...any) error {
	line := method
	for _, a := range args {
		line += fmt.Sprintf(" %+v", a)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, line)
	return r.errs[method]
}

// Reporter answers Snapshot, ready (see SetError), and Counts.
type Reporter struct {
	*Recorder
	Snapshot client.Status
	Counts   map[string]float64
}

func (f *Reporter) Status(ctx context.Context) (*client.Status, error) {
	var st client.Status
	b, _ := json.Marshal(f.Snapshot) // a deep copy: the caller owns it
	json.Unmarshal(b, &st)
	return &st, f.record("Status")
}

func (f *Reporter) Ready(ctx context.Context) client.Ready {
	if err := f.record("Ready"); err != nil {
		return client.Ready{Reason: err.Error()}
	}
	return client.Ready{Ready: true}
}

func (f *Reporter) Counters() map[string]float64 {
	f.record("Counters")
	return maps.Clone(f.Counts)
}

// Addresses answers Allocation, with the requested ID, to Allocate and
// Lookup, and Released to GC.
type Addresses struct {
	*Recorder
	Allocation client.Allocation
	Released   []string
}

func (f *Addresses) Allocate(ctx context.Context, req client.AllocateRequest) (*client.Allocation, error) {
	a := f.Allocation
	a.ID = req.ID
	return &a, f.record("Allocate", req)
}

func (f *Addresses) Lookup(ctx context.Context, id string) (*client.Allocation, error) {
	a := f.Allocation
	a.ID = id
	return &a, f.record("Lookup", id)
}

func (f *Addresses) Release(ctx context.Context, id string) error { return f.record("Release", id) }

func (f *Addresses) GC(ctx context.Context, keep []string) (*client.GCResult, error) {
	return &client.GCResult{Released: f.Released}, f.record("GC", keep)
}

// Names answers Answer to every DNSLookup.
type Names struct {
	*Recorder
	Answer []string
}

func (f *Names) DNSAdd(_ context.Context, r client.DNSRequest) error { return f.record("DNSAdd", r) }

func (f *Names) DNSRemove(_ context.Context, r client.DNSRequest) error {
	return f.record("DNSRemove", r)
}

func (f *Names) DNSLookup(ctx context.Context, name string) (*client.DNSLookup, error) {
	return &client.DNSLookup{Name: name, Addresses: f.Answer}, f.record("DNSLookup", name)
}

// Membership answers Reclaimed to every Rmpeer.
type Membership struct {
	*Recorder
	Reclaimed int64
}

func (f *Membership) Connect(_ context.Context, p []string) error { return f.record("Connect", p) }

func (f *Membership) Forget(_ context.Context, p []string) error { return f.record("Forget", p) }

func (f *Membership) Rmpeer(ctx context.Context, name string) (*client.RmpeerResult, error) {
	return &client.RmpeerResult{Name: name, Reclaimed: f.Reclaimed}, f.record("Rmpeer", name)
}

func (f *Membership) Leave(ctx context.Context) error { return f.record("Leave") }

// Policies answers Report, Drops (and their counts per pod), and to
// PolicyExplain a verdict that allows ingress by Rule.
type Policies struct {
	*Recorder
	Report client.PolicyReport
	Drops  []client.PolicyDrop
}

func (f *Policies) PolicyReport(ctx context.Context) (*client.PolicyReport, error) {
	var r client.PolicyReport
	b, _ := json.Marshal(f.Report)
	json.Unmarshal(b, &r)
	return &r, f.record("PolicyReport")
}

func (f *Policies) PolicyDrops(ctx context.Context) ([]client.PolicyDrop, error) {
	var d []client.PolicyDrop
	b, _ := json.Marshal(f.Drops)
	json.Unmarshal(b, &d)
	return d, f.record("PolicyDrops")
}

func (f *Policies) PolicyExplain(ctx context.Context, req client.ExplainRequest) (*client.Explanation, error) {
	rule := client.PolicyRule{Policy: "x/allow-b", Direction: "ingress", Index: 0, Text: "from pods {pod=b}; ports TCP/80"}
	return &client.Explanation{Src: req.Src, Dst: req.Dst, Port: req.Port, Protocol: req.Protocol, Allowed: true,
		Verdict: "allowed (egress allowed: no policy selects the pod; ingress allowed: by x/allow-b rule 0)",
		Egress:  client.PolicyDecision{Allowed: true, Reason: "not-isolated", Text: "egress allowed: no policy selects the pod"},
		Ingress: client.PolicyDecision{Allowed: true, Reason: "allowed-by", Text: "ingress allowed: by x/allow-b rule 0",
			Selected: []string{"x/allow-b"}, Rules: []client.PolicyRule{rule}},
	}, f.record("PolicyExplain", req)
}

func (f *Policies) PolicyDropCounts() []client.PolicyDropCount {
	f.record("PolicyDropCounts")
	counts := map[[3]string]uint64{}
	for _, d := range f.Drops {
		ns, pod, _ := strings.Cut(d.Pod, "/")
		counts[[3]string{d.Direction, ns, pod}] += uint64(d.Count)
	}
	var out []client.PolicyDropCount
	for k, n := range counts {
		out = append(out, client.PolicyDropCount{Direction: k[0], Namespace: k[1], Pod: k[2], Count: n})
	}
	return out
}
