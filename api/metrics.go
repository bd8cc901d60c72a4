package api

// Metrics come from three places: a status collector that turns one
// Reporter.Status call per scrape into gauges (so they can never drift from
// what /status says), the subsystems' monotonic counters from
// Reporter.Counters, and histograms the router observes for the CNI-facing
// routes. Everything is registered in the server's own Registry, never the
// global one, so two servers in one process (tests) do not collide.

import (
	"context"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/model"
)

// scrapeTimeout bounds the Reporter.Status call of one scrape.
const scrapeTimeout = 5 * time.Second

type metrics struct {
	reg         *prometheus.Registry
	cniRequests *prometheus.CounterVec   // op, code
	cniDuration *prometheus.HistogramVec // op
	handler     http.Handler
}

// newMetrics registers the collectors; b may be nil (then weft_status_up
// is 0 and there are no subsystem counters), and so may p (no drop
// counters).
func newMetrics(b Reporter, p Policies) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		cniRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_cni_requests_total",
			Help: "Requests to the CNI-facing API routes by operation and HTTP status code.",
		}, []string{"op", "code"}),
		cniDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "weft_cni_request_duration_seconds",
			Help:    "Time to answer a CNI-facing API request, by operation.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"op"}),
	}
	m.reg.MustRegister(
		m.cniRequests, m.cniDuration,
		newStatusCollector(b),
		counterCollector{b},
		newDropCollector(p),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
	})
	return m
}

func (m *metrics) observeCNI(op string, code int, d time.Duration) {
	m.cniRequests.WithLabelValues(op, strconv.Itoa(code)).Inc()
	m.cniDuration.WithLabelValues(op).Observe(d.Seconds())
}

func (m *metrics) serve(w http.ResponseWriter, r *http.Request) error {
	m.handler.ServeHTTP(w, r)
	return nil
}

// statusCollector computes the mesh gauges from Reporter.Status at scrape time.
type statusCollector struct {
	b Reporter // nil = no status

	up, info, uptime        *prometheus.Desc
	peers, connections      *prometheus.Desc
	relayed                 *prometheus.Desc
	handshakeAge, rx, tx    *prometheus.Desc
	linkTimeout             *prometheus.Desc
	ipamAddresses, ipamUnre *prometheus.Desc
	dnsRecords, pods        *prometheus.Desc
	kubeNodes, kubeNoPeer   *prometheus.Desc
	kubeNoNode              *prometheus.Desc
	policySynced, policyObj *prometheus.Desc
	underlay                *prometheus.Desc
}

func newStatusCollector(b Reporter) *statusCollector {
	d := prometheus.NewDesc
	return &statusCollector{
		b:             b,
		up:            d("weft_status_up", "1 when the peer's status could be read at this scrape, else 0 (and the other weft_ gauges are missing).", nil, nil),
		info:          d("weft_info", "This peer's identity; always 1.", []string{"name", "id", "version", "transport"}, nil),
		uptime:        d("weft_uptime_seconds", "Seconds since this peer started.", nil, nil),
		peers:         d("weft_peers", "Known peers (this one included) by state.", []string{"state"}, nil),
		connections:   d("weft_connections", "Live links from this peer to alive peers, by transport.", []string{"transport"}, nil),
		relayed:       d("weft_relayed_peers", "Peers this peer reaches through a relay because it cannot reach them directly.", nil, nil),
		handshakeAge:  d("weft_peer_handshake_age_seconds", "Seconds since the last WireGuard handshake with a peer.", []string{"peer"}, nil),
		linkTimeout:   d("weft_peer_link_timeout_seconds", "Silence after which the direct link to a peer is judged down (3 s; longer past 50 peers on a link without traffic).", []string{"peer"}, nil),
		rx:            d("weft_peer_rx_bytes", "Bytes received from a peer over the datapath.", []string{"peer"}, nil),
		tx:            d("weft_peer_tx_bytes", "Bytes sent to a peer over the datapath.", []string{"peer"}, nil),
		ipamAddresses: d("weft_ipam_addresses", "This peer's pod addresses: owned, free (of owned) and allocated.", []string{"kind"}, nil),
		ipamUnre:      d("weft_ipam_unreachable_share", "Share (0..1) of the address range owned by peers this peer cannot reach.", nil, nil),
		dnsRecords:    d("weft_dns_records", "DNS records in the replicated record set.", nil, nil),
		pods:          d("weft_pods", "Local pods (CNI attachments) on this peer.", nil, nil),
		kubeNodes:     d("weft_kube_nodes", "Kubernetes Nodes in this peer's view (Kubernetes mode only).", nil, nil),
		kubeNoPeer:    d("weft_kube_nodes_without_peer", "Kubernetes Nodes that no weft peer is named after (Kubernetes mode only).", nil, nil),
		kubeNoNode:    d("weft_kube_peers_without_node", "Weft peers and ring owners with no Kubernetes Node of their name: reclaimed once down (Kubernetes mode only).", nil, nil),
		policySynced:  d("weft_policy_synced", "1 when the kernel reflects every NetworkPolicy object the informers have seen, else 0 (NetworkPolicy enabled only).", nil, nil),
		underlay:      d("weft_underlay_addresses", "This peer's underlay pool (macvlan pods; --underlay-range only): owned, free (of owned), allocated, and taken (held back: a LAN machine answered ARP, or a peer's or the gateway's address).", []string{"kind"}, nil),
		policyObj:     d("weft_policy_objects", "NetworkPolicy enforcement: policies (in the cluster), pods (in the cluster, with an IP), isolated (local pods some policy selects).", []string{"kind"}, nil),
	}
}

func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.info, c.uptime, c.peers, c.connections, c.relayed, c.handshakeAge, c.linkTimeout, c.rx, c.tx, c.ipamAddresses, c.ipamUnre, c.dnsRecords, c.pods,
		c.kubeNodes, c.kubeNoPeer, c.kubeNoNode, c.policySynced, c.policyObj, c.underlay} {
		ch <- d
	}
}

func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	if c.b == nil {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	st, err := c.b.Status(ctx)
	if err != nil || st == nil {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge(c.up, 1)
	gauge(c.info, 1, st.Name, st.ID, st.Version, st.Transport)
	gauge(c.uptime, st.UptimeSeconds)

	states := map[string]float64{"alive": 0, "dead": 0, "stopped": 0, "left": 0}
	conns := map[string]float64{}
	now := time.Now()
	relayed := 0.0
	for _, p := range st.Peers {
		states[p.State]++
		if p.Self {
			continue
		}
		if p.Via != "" {
			relayed++
		}
		if p.State == "alive" && p.Transport != "" {
			conns[p.Transport]++
		}
		if t, err := time.Parse(time.RFC3339Nano, p.LastHandshake); err == nil {
			gauge(c.handshakeAge, max(0, now.Sub(t).Seconds()), p.Name)
		}
		if p.LinkTimeoutSeconds > 0 {
			gauge(c.linkTimeout, p.LinkTimeoutSeconds, p.Name)
		}
		counter(c.rx, float64(p.RxBytes), p.Name)
		counter(c.tx, float64(p.TxBytes), p.Name)
	}
	for _, s := range sortedKeys(states) {
		gauge(c.peers, states[s], s)
	}
	for _, t := range sortedKeys(conns) {
		gauge(c.connections, conns[t], t)
	}
	gauge(c.relayed, relayed)

	gauge(c.ipamAddresses, float64(st.IPAM.Owned), "owned")
	gauge(c.ipamAddresses, float64(st.IPAM.Free), "free")
	gauge(c.ipamAddresses, float64(st.IPAM.Allocated), "allocated")
	var unreachable float64
	for _, o := range st.IPAM.Owners {
		if !o.Reachable {
			unreachable += o.Share
		}
	}
	gauge(c.ipamUnre, unreachable)
	gauge(c.dnsRecords, float64(len(st.DNS.Entries)))
	gauge(c.pods, float64(len(st.Pods)))
	if u := st.Underlay; u != nil {
		gauge(c.underlay, float64(u.Owned), "owned")
		gauge(c.underlay, float64(u.Free), "free")
		gauge(c.underlay, float64(u.Allocated), "allocated")
		gauge(c.underlay, float64(len(u.Taken)), "taken")
	}
	if k := st.Kubernetes; k != nil && k.Synced {
		gauge(c.kubeNodes, float64(len(k.Nodes)))
		gauge(c.kubeNoPeer, float64(len(k.NodesWithoutPeer)))
		gauge(c.kubeNoNode, float64(len(k.PeersWithoutNode)))
	}
	if p := st.Policy; p.Enabled {
		synced := 0.0
		if p.Synced {
			synced = 1
		}
		gauge(c.policySynced, synced)
		gauge(c.policyObj, float64(p.Policies), "policies")
		gauge(c.policyObj, float64(p.Pods), "pods")
		gauge(c.policyObj, float64(p.Isolated), "isolated")
	}
}

// dropCollector exports Policies.PolicyDropCounts as
// weft_policy_drops_total. Its labels are bounded: the backend counts
// this node's pods only, two directions each.
type dropCollector struct {
	p     Policies // nil = no drops
	drops *prometheus.Desc
}

func newDropCollector(p Policies) dropCollector {
	return dropCollector{p: p, drops: prometheus.NewDesc("weft_policy_drops_total",
		"Packets dropped by NetworkPolicy and logged (the log is rate-limited per pod), by local pod and direction.",
		[]string{"direction", "namespace", "pod"}, nil)}
}

func (c dropCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.drops }

func (c dropCollector) Collect(ch chan<- prometheus.Metric) {
	if c.p == nil {
		return
	}
	for _, d := range c.p.PolicyDropCounts() {
		ch <- prometheus.MustNewConstMetric(c.drops, prometheus.CounterValue, float64(d.Count), d.Direction, d.Namespace, d.Pod)
	}
}

// counterCollector exports Reporter.Counters as weft_NAME counters. It is
// an unchecked collector (Describe sends nothing) because the subsystems
// choose the names.
type counterCollector struct{ b Reporter } // nil = no counters

func (counterCollector) Describe(chan<- *prometheus.Desc) {}

func (c counterCollector) Collect(ch chan<- prometheus.Metric) {
	if c.b == nil {
		return
	}
	counters := c.b.Counters()
	for _, name := range sortedKeys(counters) {
		full := "weft_" + name
		if !model.IsValidLegacyMetricName(full) || reservedMetric(full) {
			continue
		}
		d := prometheus.NewDesc(full, "Subsystem counter "+name+".", nil, nil)
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, counters[name])
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// reservedMetric reports names this package exports itself; a subsystem
// counter with such a name would break the whole scrape.
func reservedMetric(name string) bool {
	switch name {
	case "weft_status_up", "weft_info", "weft_uptime_seconds", "weft_peers", "weft_connections", "weft_relayed_peers",
		"weft_peer_handshake_age_seconds", "weft_peer_link_timeout_seconds", "weft_peer_rx_bytes", "weft_peer_tx_bytes",
		"weft_ipam_addresses", "weft_ipam_unreachable_share", "weft_dns_records", "weft_pods",
		"weft_kube_nodes", "weft_kube_nodes_without_peer", "weft_kube_peers_without_node",
		"weft_policy_synced", "weft_policy_objects", "weft_policy_drops_total", "weft_underlay_addresses",
		"weft_cni_requests_total", "weft_cni_request_duration_seconds":
		return true
	}
	return false
}
