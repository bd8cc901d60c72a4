package test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/weftmesh/weft/api/apitest"
	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/test/testbed"
)

// httpPort is the port of the read-only listener the bed gives every peer.
const httpPort = "6784"

// get fetches path from h's read-only listener.
func get(t *testing.T, h *testbed.Host, path string) (int, []byte) {
	t.Helper()
	return request(t, h, http.MethodGet, path, "")
}

func request(t *testing.T, h *testbed.Host, method, path, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+h.Addr.String()+":"+httpPort+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := h.HTTPClient().Do(req)
	if err != nil {
		t.Fatalf("%s %s on %s: %v", method, path, h.Name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s on %s: read body: %v", method, path, h.Name, err)
	}
	return resp.StatusCode, b
}

// volatileStatus strips from a decoded status document the fields that
// change between two reads a moment apart: uptime, and per peer the last
// seen and handshake times, byte counters and RTT.
func volatileStatus(v any) any {
	m, ok := v.(map[string]any)
	if !ok {
		return v
	}
	delete(m, "uptime_seconds")
	peers, _ := m["peers"].([]any)
	for _, p := range peers {
		if pm, ok := p.(map[string]any); ok {
			for _, k := range []string{"last_seen", "last_handshake", "rx_bytes", "tx_bytes", "rtt_ms"} {
				delete(pm, k)
			}
		}
	}
	return m
}

// metricValue returns the value of the sample of family name whose labels
// include want, and whether there is one.
// scrape reads h's /metrics and parses it; anything else fails the test.
func scrape(t *testing.T, h *testbed.Host) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := get(t, h, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("%s: GET /metrics: %d %s", h.Name, code, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("%s: /metrics does not parse: %v", h.Name, err)
	}
	return fams
}

func metricValue(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Untyped != nil:
			return m.GetUntyped().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

// launchSecureMeshWith is launchSecureMesh with extra launch flags for
// every peer.
func launchSecureMeshWith(t *testing.T, bed *testbed.Bed, extra ...string) {
	t.Helper()
	h1 := bed.Hosts[0]
	h1.Launch(t, extra...)
	secret := filepath.Join(bed.Dir, "secret")
	testutil.Eventually(t, 20*time.Second, "h1 to create the secret", func() error {
		b, err := os.ReadFile(filepath.Join(h1.Dir, "data", "secret"))
		if err != nil {
			return err
		}
		return os.WriteFile(secret, b, 0o600)
	})
	for i, h := range bed.Hosts[1:] {
		h.Launch(t, append([]string{"--password-file", secret, bed.Hosts[i].Addr.String()}, extra...)...)
	}
}

// TestStatusPageMetricsAndAPI covers issue 7's acceptance on a 3-host
// WireGuard bed with a pod and DNS records: every peer's status page in
// headless Chromium, /metrics, /status against the CLI, the read-only TCP
// listener and the control socket's permissions.
func TestStatusPageMetricsAndAPI(t *testing.T) {
	bed := testbed.New(t, 3)
	bed.DumpLogsOnFailure(t)
	// Every peer forwards to a resolver inside the bed, never the machine's.
	inetNS, inetAddr := bed.AddInternet()
	up := testbed.StartUpstreamDNS(t, inetNS, netip.AddrPortFrom(inetAddr, 53), nil)
	launchSecureMeshWith(t, bed, "--dns-upstream="+up.Addr.String())
	waitAlive(t, bed.Hosts, 3, 45*time.Second)
	h1, h2, h3 := bed.Hosts[0], bed.Hosts[1], bed.Hosts[2]

	p1 := h1.AddPod(t, "p1")
	mustWeft(t, h2, "dns", "add", "web", "10.32.200.2")
	// Traffic over WireGuard to both other peers: handshakes and bytes.
	for _, h := range []*testbed.Host{h2, h3} {
		b := bridgeOf(t, h)
		testutil.Eventually(t, 30*time.Second, "pod on h1 to ping "+h.Name+"'s bridge", func() error { return p1.Ping(b) })
	}
	// A DNS query on h1, for the query counters.
	ns1, err := p1.Nameserver()
	if err != nil {
		t.Fatal(err)
	}
	waitDig(t, 20*time.Second, []resolver{{"pod on h1", p1.Exec, ns1}}, "web.weft.local", wantAddrs(netip.MustParseAddr("10.32.200.2")))
	for _, h := range bed.Hosts {
		testutil.Eventually(t, 20*time.Second, h.Name+" to list both DNS records", func() error {
			st, err := h.Status()
			if err != nil {
				return err
			}
			if len(st.DNS.Entries) != 2 {
				return fmt.Errorf("%d entries: %+v", len(st.DNS.Entries), st.DNS.Entries)
			}
			return nil
		})
	}

	t.Run("status page in a browser", func(t *testing.T) {
		out := apitest.OutDir(t)
		for _, h := range bed.Hosts {
			dir := filepath.Join(out, h.Name)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			url := "http://" + h.Forward(t, h.Addr.String()+":"+httpPort) + "/"
			start := time.Now()
			rep := apitest.CheckPage(t, url, 3, dir)
			t.Logf("%s: page checked in %v: peers %v %v, %d ring ranges, %d DNS records, %d pods, problems %q, screenshot %s",
				h.Name, time.Since(start).Round(time.Millisecond), rep.Peers, rep.States, rep.Ranges, rep.DNSRecords, rep.Pods, rep.Problems, rep.Screenshot)
			if diff := cmp.Diff([]string{"alive", "alive", "alive"}, rep.States); diff != "" {
				t.Errorf("%s: peer states on the page (-want +got):\n%s", h.Name, diff)
			}
			if rep.DNSRecords != 2 {
				t.Errorf("%s: page shows %d DNS records; want 2", h.Name, rep.DNSRecords)
			}
			if want := map[bool]int{true: 1, false: 0}[h == h1]; rep.Pods != want {
				t.Errorf("%s: page shows %d local pods; want %d", h.Name, rep.Pods, want)
			}
			if len(rep.Problems) != 0 {
				t.Errorf("%s: healthy mesh, but the page lists problems %q", h.Name, rep.Problems)
			}
		}
	})

	t.Run("metrics", func(t *testing.T) {
		for _, h := range bed.Hosts {
			fams := scrape(t, h)
			v := func(name string, labels ...string) float64 {
				t.Helper()
				want := map[string]string{}
				for i := 0; i+1 < len(labels); i += 2 {
					want[labels[i]] = labels[i+1]
				}
				x, ok := metricValue(fams, name, want)
				if !ok {
					t.Errorf("%s: /metrics has no %s%v", h.Name, name, want)
				}
				return x
			}
			check := func(what string, ok bool, got float64) {
				t.Helper()
				if !ok {
					t.Errorf("%s: %s (got %v)", h.Name, what, got)
				}
			}
			check("weft_status_up == 1", v("weft_status_up") == 1, v("weft_status_up"))
			check("weft_info for this peer", v("weft_info", "name", h.Name, "transport", "wireguard") == 1, 0)
			check("weft_uptime_seconds > 0", v("weft_uptime_seconds") > 0, v("weft_uptime_seconds"))
			check("weft_peers{alive} == 3", v("weft_peers", "state", "alive") == 3, v("weft_peers", "state", "alive"))
			for _, s := range []string{"dead", "stopped", "left"} {
				check("weft_peers{"+s+"} == 0", v("weft_peers", "state", s) == 0, v("weft_peers", "state", s))
			}
			check("weft_connections{wireguard} == 2", v("weft_connections", "transport", "wireguard") == 2, v("weft_connections", "transport", "wireguard"))
			owned, free, alloc := v("weft_ipam_addresses", "kind", "owned"), v("weft_ipam_addresses", "kind", "free"), v("weft_ipam_addresses", "kind", "allocated")
			// The range's network and broadcast addresses are owned but never free.
			check(fmt.Sprintf("ipam owned %v > 0, free %v, allocated %v >= 1: owned-2 <= free+allocated <= owned", owned, free, alloc),
				owned > 0 && alloc >= 1 && free+alloc <= owned && free+alloc >= owned-2, owned)
			check("weft_ipam_unreachable_share == 0", v("weft_ipam_unreachable_share") == 0, v("weft_ipam_unreachable_share"))
			check("weft_dns_records == 2", v("weft_dns_records") == 2, v("weft_dns_records"))
			pods := map[bool]float64{true: 1, false: 0}[h == h1]
			check(fmt.Sprintf("weft_pods == %v", pods), v("weft_pods") == pods, v("weft_pods"))
			check("weft_reconcile_runs_total > 0", v("weft_reconcile_runs_total") > 0, v("weft_reconcile_runs_total"))
			check("weft_reconcile_errors_total >= 0", v("weft_reconcile_errors_total") >= 0, v("weft_reconcile_errors_total"))
			v("weft_reconcile_skipped_total") // router passes that changed nothing
			v("weft_sync_skipped_total")      // sync passes skipped: nothing changed
			v("weft_relay_reports_applied_total")
			v("weft_relay_switch_passes_total")
			v("weft_gossip_member_syncs_total") // membership push-pulls started by anti-entropy
			v("weft_gossip_repairs_total")      // channel repairs started by anti-entropy
			check("weft_ipam_syncs_total >= 1 (the bridge's allocation)", v("weft_ipam_syncs_total") >= 1, v("weft_ipam_syncs_total"))
			probes := v("weft_probe_hellos_sent_total") + v("weft_probe_requests_sent_total")
			check("datapath probes sent > 0", probes > 0, probes)
			rx, reads := v("weft_probe_received_total"), v("weft_probe_reads_total")
			check(fmt.Sprintf("datapath probes received %v in %v reads: > 0, at least one a read", rx, reads), rx > 0 && reads > 0 && rx >= reads, rx)
			v("weft_dns_queries_total")
			for _, o := range bed.Hosts {
				if o != h {
					check("weft_peer_link_timeout_seconds{"+o.Name+"} == 3 (every link probed every second)",
						v("weft_peer_link_timeout_seconds", "peer", o.Name) == 3, v("weft_peer_link_timeout_seconds", "peer", o.Name))
				}
			}
			if h != h1 {
				continue
			}
			check("weft_dns_queries_total >= 1 on h1", v("weft_dns_queries_total") >= 1, v("weft_dns_queries_total"))
			check("weft_cni_requests_total{allocate,200} >= 1", v("weft_cni_requests_total", "op", "allocate", "code", "200") >= 1,
				v("weft_cni_requests_total", "op", "allocate", "code", "200"))
			check("weft_cni_request_duration_seconds{allocate} count >= 1", v("weft_cni_request_duration_seconds", "op", "allocate") >= 1,
				v("weft_cni_request_duration_seconds", "op", "allocate"))
			// The datapath's counters: status shows the last reading (at
			// most 10 s old) when the device is slow to answer, so wait
			// for them.
			for _, p := range []string{h2.Name, h3.Name} {
				testutil.Eventually(t, 30*time.Second, h.Name+": handshake and bytes with "+p+" in /metrics", func() error {
					fams := scrape(t, h)
					age, okAge := metricValue(fams, "weft_peer_handshake_age_seconds", map[string]string{"peer": p})
					rx, _ := metricValue(fams, "weft_peer_rx_bytes", map[string]string{"peer": p})
					tx, _ := metricValue(fams, "weft_peer_tx_bytes", map[string]string{"peer": p})
					if !okAge || age < 0 || age > 180 || rx <= 0 || tx <= 0 {
						return fmt.Errorf("handshake age %v (present %v), rx %v, tx %v; want an age in [0, 180] s and bytes both ways", age, okAge, rx, tx)
					}
					return nil
				})
			}
		}
	})

	t.Run("status over TCP equals weft status --json", func(t *testing.T) {
		for _, h := range bed.Hosts {
			testutil.Eventually(t, 20*time.Second, h.Name+": GET /status to match the CLI", func() error {
				code, body := get(t, h, "/status")
				if code != http.StatusOK {
					return fmt.Errorf("GET /status: %d %s", code, body)
				}
				cli, stderr, err := h.Weft("status", "--json")
				if err != nil {
					return fmt.Errorf("weft status --json: %v: %s", err, stderr)
				}
				var overTCP, overCLI any
				if err := json.Unmarshal(body, &overTCP); err != nil {
					return fmt.Errorf("decode /status: %v", err)
				}
				if err := json.Unmarshal([]byte(cli), &overCLI); err != nil {
					return fmt.Errorf("decode CLI: %v", err)
				}
				if diff := cmp.Diff(volatileStatus(overCLI), volatileStatus(overTCP)); diff != "" {
					return fmt.Errorf("(-cli +tcp):\n%s", diff)
				}
				return nil
			})
		}
	})

	t.Run("TCP listener refuses mutations", func(t *testing.T) {
		mutating := map[string]string{
			"/ip/allocate": `{"id":"evil"}`,
			"/ip/release":  `{"id":"weft:bridge"}`,
			"/ip/gc":       `{"keep":[]}`,
			"/dns/add":     `{"name":"evil","address":"10.32.200.66"}`,
			"/dns/remove":  `{"name":"web"}`,
			"/connect":     `{"peers":["192.0.2.1"]}`,
			"/forget":      `{"peers":["` + h2.Addr.String() + `"]}`,
			"/rmpeer":      `{"name":"h3"}`,
		}
		readOnly := []string{"/", "/status", "/status/peers", "/status/ipam", "/status/dns", "/ready", "/ip/lookup", "/dns/lookup", "/metrics"}
		for _, h := range bed.Hosts {
			for path, body := range mutating {
				for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch, http.MethodGet} {
					code, resp := request(t, h, m, path, body)
					if code != http.StatusForbidden && code != http.StatusMethodNotAllowed {
						t.Errorf("%s: %s %s over TCP: %d %s; want 403 or 405", h.Name, m, path, code, resp)
					}
				}
			}
			for _, path := range readOnly {
				for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch} {
					if code, resp := request(t, h, m, path, `{}`); code != http.StatusMethodNotAllowed && code != http.StatusForbidden {
						t.Errorf("%s: %s %s over TCP: %d %s; want 405", h.Name, m, path, code, resp)
					}
				}
			}
		}
		// Nothing changed: the records, the allocations and the mesh.
		for _, h := range bed.Hosts {
			st, err := h.Status()
			if err != nil {
				t.Fatal(err)
			}
			if len(st.DNS.Entries) != 2 {
				t.Errorf("%s: %d DNS records after refused mutations; want 2: %+v", h.Name, len(st.DNS.Entries), st.DNS.Entries)
			}
			if _, _, err := h.Weft("ip", "lookup", "evil"); err == nil {
				t.Errorf("%s: POST /ip/allocate over TCP allocated an address", h.Name)
			}
		}
		waitAlive(t, bed.Hosts, 3, 10*time.Second)
	})

	t.Run("a dead peer is a problem in words", func(t *testing.T) {
		h3.Kill()
		killed := time.Now()
		testutil.Eventually(t, 45*time.Second, "h1 to report h3 dead", func() error {
			if st, _ := peerState(t, h1, h3.Name); st != "dead" {
				return fmt.Errorf("h3 is %q", st)
			}
			return nil
		})
		t.Logf("h1 reports h3 dead %v after kill -9", time.Since(killed).Round(time.Millisecond))
		st, err := h1.Status()
		if err != nil {
			t.Fatal(err)
		}
		var h3Share float64
		for _, o := range st.IPAM.Owners {
			if o.Name == h3.Name {
				h3Share = o.Share
				if o.Reachable {
					t.Errorf("status of h1: dead h3 is a reachable owner")
				}
			}
		}
		checkDeadOwnerWords(t, "status of h1", st.Problems)

		fams := scrape(t, h1)
		for _, c := range []struct {
			name   string
			labels map[string]string
			want   float64
		}{
			{"weft_peers", map[string]string{"state": "alive"}, 2},
			{"weft_peers", map[string]string{"state": "dead"}, 1},
			{"weft_connections", map[string]string{"transport": "wireguard"}, 1},
			{"weft_ipam_unreachable_share", nil, h3Share},
		} {
			if got, ok := metricValue(fams, c.name, c.labels); !ok || got != c.want {
				t.Errorf("h1 with h3 dead: %s%v = %v (present %v); want %v", c.name, c.labels, got, ok, c.want)
			}
		}
		if h3Share <= 0 {
			t.Errorf("h3 owned no share of the ring: %+v", st.IPAM.Owners)
		}

		dir := filepath.Join(apitest.OutDir(t), "h1-with-h3-dead")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		rep := apitest.CheckPage(t, "http://"+h1.Forward(t, h1.Addr.String()+":"+httpPort)+"/", 3, dir)
		t.Logf("h1's page with h3 dead: states %v, problems %q", rep.States, rep.Problems)
		if diff := cmp.Diff([]string{"alive", "alive", "dead"}, rep.States); diff != "" {
			t.Errorf("peer states on h1's page (-want +got):\n%s", diff)
		}
		checkDeadOwnerWords(t, "h1's page", rep.Problems)
	})

	t.Run("control socket is 0600 and root's", func(t *testing.T) {
		for _, h := range bed.Hosts {
			fi, err := os.Stat(h.Socket)
			if err != nil {
				t.Fatal(err)
			}
			st := fi.Sys().(*syscall.Stat_t)
			if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 || st.Uid != 0 || st.Gid != 0 {
				t.Errorf("%s: %s is %v owned by %d:%d; want a socket, 0600, root:root", h.Name, h.Socket, fi.Mode(), st.Uid, st.Gid)
			}
		}
	})
}

// checkDeadOwnerWords: a ring owner that died seconds ago is a problem that
// names it and says its routes are kept, and it is too early to advise
// rmpeer (that advice waits until the peer has been down for minutes; the
// threshold is table-tested in daemon/owners_test.go).
func checkDeadOwnerWords(t *testing.T, where string, problems []string) {
	t.Helper()
	named := false
	for _, p := range problems {
		if strings.Contains(p, "h3") && strings.Contains(p, "routes to them are kept") {
			named = true
		}
		if strings.Contains(p, "weft rmpeer h3") {
			t.Errorf("%s with h3 dead for seconds already advises rmpeer: %q", where, p)
		}
	}
	if !named {
		t.Errorf("%s with h3 dead: problems %q do not say that h3's routes are kept", where, problems)
	}
}
