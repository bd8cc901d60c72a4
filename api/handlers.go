package api

import (
	"net/http"

	"github.com/weftmesh/weft/api/client"
)

// status fetches the Backend's status and makes its slices non-nil, so
// that the JSON has [] rather than null and scripts can iterate blindly.
func (s *Server) status(r *http.Request) (*client.Status, error) {
	st, err := s.backend.Status(r.Context())
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
		st.Version = s.cfg.Version
	}
	return st, nil
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) error {
	st, err := s.status(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

func (s *Server) handleStatusPeers(w http.ResponseWriter, r *http.Request) error {
	st, err := s.status(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st.Peers)
	return nil
}

func (s *Server) handleStatusIPAM(w http.ResponseWriter, r *http.Request) error {
	st, err := s.status(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st.IPAM)
	return nil
}

func (s *Server) handleStatusDNS(w http.ResponseWriter, r *http.Request) error {
	st, err := s.status(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st.DNS)
	return nil
}

// handleReady always answers 200 with the Ready document (the client
// decodes only 2xx answers); "ready": false carries the reason.
func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, s.backend.Ready(r.Context()))
	return nil
}

func (s *Server) handleLookup(w http.ResponseWriter, r *http.Request) error {
	id := r.URL.Query().Get("id")
	if err := required("id", id); err != nil {
		return badRequest("query parameter \"id\" is required: GET /ip/lookup?id=CONTAINER-ID")
	}
	a, err := s.backend.Lookup(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, a)
	return nil
}

func (s *Server) handleDNSLookup(w http.ResponseWriter, r *http.Request) error {
	name := r.URL.Query().Get("name")
	if err := required("name", name); err != nil {
		return badRequest("query parameter \"name\" is required: GET /dns/lookup?name=web")
	}
	l, err := s.backend.DNSLookup(r.Context(), name)
	if err != nil {
		return err
	}
	if l.Addresses == nil {
		l.Addresses = []string{}
	}
	writeJSON(w, http.StatusOK, l)
	return nil
}

func (s *Server) handleAllocate(w http.ResponseWriter, r *http.Request) error {
	var req client.AllocateRequest
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	if err := required("id", req.ID); err != nil {
		return err
	}
	a, err := s.backend.Allocate(r.Context(), req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, a)
	return nil
}

func (s *Server) handleRelease(w http.ResponseWriter, r *http.Request) error {
	var req client.ReleaseRequest
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	if err := required("id", req.ID); err != nil {
		return err
	}
	if err := s.backend.Release(r.Context(), req.ID); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, req)
	return nil
}

func (s *Server) handleGC(w http.ResponseWriter, r *http.Request) error {
	var req client.GCRequest
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	res, err := s.backend.GC(r.Context(), req.Keep)
	if err != nil {
		return err
	}
	if res.Released == nil {
		res.Released = []string{}
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

func (s *Server) handleDNSAdd(w http.ResponseWriter, r *http.Request) error {
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
	if err := s.backend.DNSAdd(r.Context(), req); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, req)
	return nil
}

func (s *Server) handleDNSRemove(w http.ResponseWriter, r *http.Request) error {
	var req client.DNSRequest
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	if req.Name == "" && req.ContainerID == "" {
		return badRequest("\"name\" or \"container_id\" is required")
	}
	if err := s.backend.DNSRemove(r.Context(), req); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, req)
	return nil
}

func (s *Server) handleConnect(w http.ResponseWriter, r *http.Request) error {
	var req client.PeersRequest
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	if len(req.Peers) == 0 {
		return badRequest("\"peers\" must list at least one host or host:port")
	}
	if err := s.backend.Connect(r.Context(), req.Peers); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, req)
	return nil
}

func (s *Server) handleForget(w http.ResponseWriter, r *http.Request) error {
	var req client.PeersRequest
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	if len(req.Peers) == 0 {
		return badRequest("\"peers\" must list at least one host or host:port")
	}
	if err := s.backend.Forget(r.Context(), req.Peers); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, req)
	return nil
}

func (s *Server) handleRmpeer(w http.ResponseWriter, r *http.Request) error {
	var req client.RmpeerRequest
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	if err := required("name", req.Name); err != nil {
		return err
	}
	res, err := s.backend.Rmpeer(r.Context(), req.Name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

func (s *Server) handleLeave(w http.ResponseWriter, r *http.Request) error {
	if err := s.backend.Leave(r.Context()); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]bool{"left": true})
	return nil
}
