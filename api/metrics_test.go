package api_test

import (
	"bytes"
	"fmt"
	"math"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/weftmesh/weft/api"
	"github.com/weftmesh/weft/api/apitest"
	"github.com/weftmesh/weft/api/client"
)

func scrape(t *testing.T, ts *testServer) map[string]*dto.MetricFamily {
	t.Helper()
	code, b := ts.do(t, true, http.MethodGet, "/metrics", "")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics = %d %s", code, b)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, b)
	}
	return fams
}

// value returns the value of the sample of family name whose labels
// include all of want ("k=v" pairs), or NaN.
func value(fams map[string]*dto.MetricFamily, name string, want ...string) float64 {
	f, ok := fams[name]
	if !ok {
		return math.NaN()
	}
next:
	for _, m := range f.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		for _, kv := range want {
			k, v, _ := strings.Cut(kv, "=")
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return math.NaN()
}

func TestMetricsRelayed(t *testing.T) {
	ts := startServer(t)
	for i, p := range ts.fakes.Reporter.Snapshot.Peers {
		if p.Name == "h3" {
			ts.fakes.Reporter.Snapshot.Peers[i].Via = "h2"
		}
	}
	if got := value(scrape(t, ts), "weft_relayed_peers"); got != 1 {
		t.Errorf("weft_relayed_peers = %v with h3 relayed through h2; want 1", got)
	}
}

func TestMetrics(t *testing.T) {
	ts := startServer(t)
	// Some CNI traffic: 3 allocations, 1 refused, 1 release, 1 DNS add.
	for i := range 3 {
		ts.do(t, false, http.MethodPost, "/ip/allocate", fmt.Sprintf(`{"id":"m%d"}`, i))
	}
	ts.do(t, false, http.MethodPost, "/ip/allocate", `{}`)
	ts.do(t, false, http.MethodPost, "/ip/release", `{"id":"m0"}`)
	ts.do(t, false, http.MethodPost, "/dns/add", `{"name":"m1","address":"10.32.0.9"}`)
	ts.calls()

	fams := scrape(t, ts)
	st := ts.fakes.Reporter.Snapshot
	tests := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"weft_status_up", nil, 1},
		{"weft_info", []string{"name=h1", "id=8f3a9c2e11d0b7a4", "version=0.1.0-test", "transport=wireguard"}, 1},
		{"weft_peers", []string{"state=alive"}, 2},
		{"weft_peers", []string{"state=dead"}, 1},
		{"weft_peers", []string{"state=stopped"}, 0},
		{"weft_connections", []string{"transport=wireguard"}, 1},
		{"weft_relayed_peers", nil, 0},
		{"weft_peer_rx_bytes", []string{"peer=h2"}, 18_734_112},
		{"weft_peer_tx_bytes", []string{"peer=h3"}, 2_990_001},
		{"weft_ipam_addresses", []string{"kind=owned"}, 1 << 19},
		{"weft_ipam_addresses", []string{"kind=allocated"}, 3},
		{"weft_ipam_addresses", []string{"kind=free"}, 1<<19 - 3},
		{"weft_ipam_unreachable_share", nil, 0.25},
		{"weft_dns_records", nil, float64(len(st.DNS.Entries))},
		{"weft_pods", nil, float64(len(st.Pods))},
		{"weft_dns_queries_total", nil, 1532},
		{"weft_reconcile_runs_total", nil, 211},
		{"weft_reconcile_errors_total", nil, 1},
		{"weft_cni_requests_total", []string{"op=allocate", "code=200"}, 3},
		{"weft_cni_requests_total", []string{"op=allocate", "code=400"}, 1},
		{"weft_cni_requests_total", []string{"op=release", "code=200"}, 1},
		{"weft_cni_requests_total", []string{"op=dns_add", "code=200"}, 1},
		{"weft_cni_request_duration_seconds", []string{"op=allocate"}, 4},
		{"weft_policy_synced", nil, 1},
		{"weft_policy_objects", []string{"kind=policies"}, 2},
		{"weft_policy_objects", []string{"kind=pods"}, 9},
		{"weft_policy_objects", []string{"kind=isolated"}, 1},
		{"weft_policy_drops_total", []string{"direction=ingress", "namespace=x", "pod=a"}, 7},
	}
	for _, tc := range tests {
		if got := value(fams, tc.name, tc.labels...); got != tc.want {
			t.Errorf("%s%v = %v; want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	// A link's silence allowance, for the links that are probed only.
	if got := value(fams, "weft_peer_link_timeout_seconds", "peer=h2"); got != 6 {
		t.Errorf("weft_peer_link_timeout_seconds{peer=h2} = %v; want 6", got)
	}
	for _, m := range fams["weft_peer_link_timeout_seconds"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "peer" && l.GetValue() != "h2" {
				t.Errorf("weft_peer_link_timeout_seconds for %s, which is not probed", l.GetValue())
			}
		}
	}
	// Handshake ages: h2's handshake was 42 s before the fake started.
	if age := value(fams, "weft_peer_handshake_age_seconds", "peer=h2"); !(age >= 42 && age < 120) {
		t.Errorf("weft_peer_handshake_age_seconds{peer=h2} = %v; want 42..120", age)
	}
	if up := value(fams, "weft_uptime_seconds"); !(up > 3*3600 && up < 4*3600) {
		t.Errorf("weft_uptime_seconds = %v; want about 3 h 25 min", up)
	}
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	if h := fams["weft_cni_request_duration_seconds"]; h == nil || h.GetType() != dto.MetricType_HISTOGRAM {
		t.Errorf("weft_cni_request_duration_seconds is not a histogram: %v", h)
	}
	// Nothing is cached: every scrape asks the backend once more.
	if got, want := ts.calls(), []string{"Counters", "PolicyDropCounts", "Status"}; !cmp.Equal(got, want) {
		t.Errorf("one scrape called %q; want %q", got, want)
	}
	scrape(t, ts)
	if got, want := ts.calls(), []string{"Counters", "PolicyDropCounts", "Status"}; !cmp.Equal(got, want) {
		t.Errorf("a second scrape called %q; want %q", got, want)
	}
}

// TestMetricsWithoutStatus: without a status the gauges are missing and
// weft_status_up says so; the counters do not depend on Status.
func TestMetricsWithoutStatus(t *testing.T) {
	failing := func(f *apitest.Fakes) api.Backends {
		f.SetError("Status", fmt.Errorf("status: starting"))
		return f.Backends()
	}
	noReporter := func(f *apitest.Fakes) api.Backends { return api.Backends{Addresses: f.Addresses} }
	tests := []struct {
		name         string
		parts        func(*apitest.Fakes) api.Backends
		wantCounters bool
	}{
		{"status fails", failing, true},
		{"no reporter", noReporter, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fams := scrape(t, startWith(t, tc.parts))
			if up := value(fams, "weft_status_up"); up != 0 {
				t.Errorf("weft_status_up = %v; want 0", up)
			}
			for _, name := range []string{"weft_info", "weft_peers", "weft_ipam_addresses"} {
				if _, ok := fams[name]; ok {
					t.Errorf("%s present without a status", name)
				}
			}
			if _, ok := fams["go_goroutines"]; !ok {
				t.Errorf("/metrics lacks go_goroutines")
			}
			if v := value(fams, "weft_dns_queries_total"); tc.wantCounters != (v == 1532) {
				t.Errorf("weft_dns_queries_total = %v; want 1532: %v", v, tc.wantCounters)
			}
		})
	}
}

// TestMetricsUnderlay: a peer with an underlay pool exports its addresses,
// the taken ones included; one without exports none.
func TestMetricsUnderlay(t *testing.T) {
	ts := startWith(t, func(f *apitest.Fakes) api.Backends {
		f.Reporter.Snapshot.Underlay = &client.UnderlayStatus{
			IPAMStatus: client.IPAMStatus{Range: "192.168.1.192/26", Status: "ready", Owned: 32, Free: 27, Allocated: 5},
			Taken:      []client.TakenAddress{{Address: "192.168.1.194", Reason: "gateway"}, {Address: "192.168.1.195", Reason: "answered ARP"}},
		}
		return f.Backends()
	})
	fams := scrape(t, ts)
	for kind, want := range map[string]float64{"owned": 32, "free": 27, "allocated": 5, "taken": 2} {
		if got := value(fams, "weft_underlay_addresses", "kind="+kind); got != want {
			t.Errorf("weft_underlay_addresses{kind=%s} = %v; want %v", kind, got, want)
		}
	}
	if _, ok := fams["weft_underlay_addresses"]; !ok {
		t.Fatalf("no weft_underlay_addresses")
	}
	if _, ok := scrape(t, startServer(t))["weft_underlay_addresses"]; ok {
		t.Errorf("a peer without an underlay pool exports weft_underlay_addresses")
	}
}
