package api

// Handlers, grouped by the backend part they use. Each takes only that
// part; routes binds it (routes.go).

import (
	"context"
	"fmt"
	"net/http"
	"strconv"

	"github.com/weftmesh/weft/api/client"
)

// status fetches b's status and makes its slices non-nil, so that the
// JSON has [] rather than null and scripts can iterate blindly. An empty
// version becomes the server's.
func status(ctx context.Context, b Reporter, version string) (*client.Status, error) {
	st, err := b.Status(ctx)
	if err != nil {
		return nil, err
	}
	if st.Peers == nil {
		st.Peers = []client.Peer{}
	}
	if st.Pods == nil {
		st.Pods = []client.Pod{}
	}
	if st.Problems == nil {
		st.Problems = []string{}
	}
	if st.IPAM.Owners == nil {
		st.IPAM.Owners = []client.IPAMOwner{}
	}
	if st.IPAM.Ranges == nil {
		st.IPAM.Ranges = []client.IPAMRange{}
	}
	if st.DNS.Entries == nil {
		st.DNS.Entries = []client.DNSEntry{}
	}
	if st.DNS.Listen == nil {
		st.DNS.Listen = []string{}
	}
	if st.Version == "" {
		st.Version = version
	}
	return st, nil
}

// handleStatus answers /status, or the part of it that part picks
// (/status/peers, /status/ipam, /status/dns).
func handleStatus(version string, part func(*client.Status) any) handler[Reporter] {
	return func(b Reporter, w http.ResponseWriter, r *http.Request) error {
		st, err := status(r.Context(), b, version)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, part(st))
		return nil
	}
}

// handleReady always answers 200 with the Ready document (the client
// decodes only 2xx answers); "ready": false carries the reason.
func handleReady(b Reporter, w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, b.Ready(r.Context()))
	return nil
}

// handleReadyz is /ready for probes that read only the status code (a
// Kubernetes readinessProbe): 200 "ok" when the peer can serve pods, else
// 503 with the reason.
func handleReadyz(b Reporter, w http.ResponseWriter, r *http.Request) error {
	rd := b.Ready(r.Context())
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !rd.Ready {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "not ready:", rd.Reason)
		return nil
	}
	fmt.Fprintln(w, "ok")
	return nil
}

func handleLookup(b Addresses, w http.ResponseWriter, r *http.Request) error {
	id := r.URL.Query().Get("id")
	if err := required("id", id); err != nil {
		return badRequest("query parameter \"id\" is required: GET /ip/lookup?id=CONTAINER-ID")
	}
	a, err := b.Lookup(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, a)
	return nil
}

func handleAllocate(b Addresses, w http.ResponseWriter, r *http.Request) error {
	var req client.AllocateRequest
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	if err := required("id", req.ID); err != nil {
		return err
	}
	a, err := b.Allocate(r.Context(), req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, a)
	return nil
}

func handleRelease(b Addresses, w http.ResponseWriter, r *http.Request) error {
	var req client.ReleaseRequest
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	if err := required("id", req.ID); err != nil {
		return err
	}
	if err := b.Release(r.Context(), req.ID); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, req)
	return nil
}

func handleGC(b Addresses, w http.ResponseWriter, r *http.Request) error {
	var req client.GCRequest
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	res, err := b.GC(r.Context(), req.Keep)
	if err != nil {
		return err
	}
	if res.Released == nil {
		res.Released = []string{}
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

func handleDNSLookup(b Names, w http.ResponseWriter, r *http.Request) error {
	name := r.URL.Query().Get("name")
	if err := required("name", name); err != nil {
		return badRequest("query parameter \"name\" is required: GET /dns/lookup?name=web")
	}
	l, err := b.DNSLookup(r.Context(), name)
	if err != nil {
		return err
	}
	if l.Addresses == nil {
		l.Addresses = []string{}
	}
	writeJSON(w, http.StatusOK, l)
	return nil
}

func handleDNSAdd(b Names, w http.ResponseWriter, r *http.Request) error {
	var req client.DNSRequest
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	if err := required("name", req.Name); err != nil {
		return err
	}
	if err := required("address", req.Address); err != nil {
		return err
	}
	if err := b.DNSAdd(r.Context(), req); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, req)
	return nil
}

func handleDNSRemove(b Names, w http.ResponseWriter, r *http.Request) error {
	var req client.DNSRequest
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	if req.Name == "" && req.ContainerID == "" {
		return badRequest("\"name\" or \"container_id\" is required")
	}
	if err := b.DNSRemove(r.Context(), req); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, req)
	return nil
}

// handleConnect and handleForget take the same body.
func handleConnect(b Membership, w http.ResponseWriter, r *http.Request) error {
	return peersRequest(w, r, b.Connect)
}

func handleForget(b Membership, w http.ResponseWriter, r *http.Request) error {
	return peersRequest(w, r, b.Forget)
}

func peersRequest(w http.ResponseWriter, r *http.Request, do func(context.Context, []string) error) error {
	var req client.PeersRequest
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	if len(req.Peers) == 0 {
		return badRequest("\"peers\" must list at least one host or host:port")
	}
	if err := do(r.Context(), req.Peers); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, req)
	return nil
}

func handleRmpeer(b Membership, w http.ResponseWriter, r *http.Request) error {
	var req client.RmpeerRequest
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	if err := required("name", req.Name); err != nil {
		return err
	}
	res, err := b.Rmpeer(r.Context(), req.Name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

func handleLeave(b Membership, w http.ResponseWriter, r *http.Request) error {
	if err := b.Leave(r.Context()); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]bool{"left": true})
	return nil
}

func handlePolicyReport(b Policies, w http.ResponseWriter, r *http.Request) error {
	rep, err := b.PolicyReport(r.Context())
	if err != nil {
		return err
	}
	if rep.Problems == nil {
		rep.Problems = []string{}
	}
	if rep.Pods == nil {
		rep.Pods = []client.PolicyPod{}
	}
	for i := range rep.Pods {
		rep.Pods[i].Ingress = nonNil(rep.Pods[i].Ingress)
		rep.Pods[i].Egress = nonNil(rep.Pods[i].Egress)
	}
	writeJSON(w, http.StatusOK, rep)
	return nil
}

func handlePolicyDrops(b Policies, w http.ResponseWriter, r *http.Request) error {
	drops, err := b.PolicyDrops(r.Context())
	if err != nil {
		return err
	}
	if drops == nil {
		drops = []client.PolicyDrop{}
	}
	for i := range drops {
		drops[i].Policies = nonNil(drops[i].Policies)
	}
	writeJSON(w, http.StatusOK, drops)
	return nil
}

// handlePolicyExplain answers GET /policy/explain?src=&dst=&port=&protocol=.
func handlePolicyExplain(b Policies, w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	req := client.ExplainRequest{Src: q.Get("src"), Dst: q.Get("dst"), Protocol: q.Get("protocol")}
	if req.Src == "" || req.Dst == "" {
		return badRequest("query parameters \"src\" and \"dst\" are required (namespace/pod or an address): GET /policy/explain?src=x/a&dst=y/b&port=80&protocol=TCP")
	}
	if p := q.Get("port"); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 65535 {
			return badRequest("port %q: want a number from 0 to 65535", p)
		}
		req.Port = n
	}
	if req.Protocol == "" {
		req.Protocol = "TCP"
	}
	ex, err := b.PolicyExplain(r.Context(), req)
	if err != nil {
		return err
	}
	for _, d := range []*client.PolicyDecision{&ex.Egress, &ex.Ingress} {
		d.Selected = nonNil(d.Selected)
		if d.Rules == nil {
			d.Rules = []client.PolicyRule{}
		}
	}
	writeJSON(w, http.StatusOK, ex)
	return nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
