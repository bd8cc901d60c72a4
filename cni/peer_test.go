package cni

// A test fake of the weft peer's HTTP API (allocate, lookup, release, gc,
// dns, ready) on a unix socket, backed by maps. The real peer is exercised
// end to end by the lead's tests in test/.

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/weftmesh/weft/api/client"
)

type fakePeer struct {
	socket string
	bridge string

	mu       sync.Mutex // guards following
	next     int
	allocs   map[string]string // id → address
	dns      map[string]client.DNSRequest
	released []string
	gcKeep   []string
	ready    client.Ready
	failDNS  bool
	noPool   bool            // refuse the underlay pool, as a peer without --underlay-range does
	underlay map[string]bool // ids allocated from the underlay pool
}

func newFakePeer(t testing.TB, bridge string) *fakePeer {
	t.Helper()
	dir, err := os.MkdirTemp("", "wfp") // short: unix socket paths max 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f := &fakePeer{
		socket: filepath.Join(dir, "weft.sock"), bridge: bridge, next: 2,
		allocs: map[string]string{}, dns: map[string]client.DNSRequest{}, underlay: map[string]bool{},
		ready: client.Ready{Ready: true},
	}
	ln, err := net.Listen("unix", f.socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: f.mux()}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return f
}

func (f *fakePeer) mux() *http.ServeMux {
	m := http.NewServeMux()
	m.HandleFunc("POST /ip/allocate", func(w http.ResponseWriter, r *http.Request) {
		var req client.AllocateRequest
		if !decode(w, r, &req) {
			return
		}
		f.mu.Lock()
		if req.Pool == client.PoolUnderlay && f.noPool {
			f.mu.Unlock()
			reply(w, http.StatusBadRequest, client.Error{Error: "bad request: this peer has no underlay range: launch it with --underlay-range CIDR"})
			return
		}
		a, ok := f.allocs[req.ID]
		if !ok {
			a = fmt.Sprintf("10.32.%d.%d/12", f.next/256, f.next%256)
			if req.Pool == client.PoolUnderlay {
				a = fmt.Sprintf("192.168.77.%d/24", 100+f.next%100)
				f.underlay[req.ID] = true
			}
			f.next++
			f.allocs[req.ID] = a
		}
		f.mu.Unlock()
		reply(w, http.StatusOK, f.allocation(req.ID, a))
	})
	m.HandleFunc("GET /ip/lookup", func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("id")
		f.mu.Lock()
		a, ok := f.allocs[id]
		f.mu.Unlock()
		if !ok {
			reply(w, http.StatusNotFound, client.Error{Error: "no allocation for " + id})
			return
		}
		reply(w, http.StatusOK, f.allocation(id, a))
	})
	m.HandleFunc("POST /ip/release", func(w http.ResponseWriter, r *http.Request) {
		var req client.ReleaseRequest
		if !decode(w, r, &req) {
			return
		}
		f.mu.Lock()
		delete(f.allocs, req.ID)
		for n, d := range f.dns {
			if d.ContainerID == req.ID {
				delete(f.dns, n)
			}
		}
		f.released = append(f.released, req.ID)
		f.mu.Unlock()
		reply(w, http.StatusOK, struct{}{})
	})
	m.HandleFunc("POST /ip/gc", func(w http.ResponseWriter, r *http.Request) {
		var req client.GCRequest
		if !decode(w, r, &req) {
			return
		}
		keep := map[string]bool{}
		for _, k := range req.Keep {
			keep[k] = true
		}
		var res client.GCResult
		f.mu.Lock()
		f.gcKeep = req.Keep
		for id := range f.allocs {
			if !keep[id] {
				delete(f.allocs, id)
				res.Released = append(res.Released, id)
			}
		}
		f.mu.Unlock()
		reply(w, http.StatusOK, res)
	})
	m.HandleFunc("POST /dns/add", func(w http.ResponseWriter, r *http.Request) {
		var req client.DNSRequest
		if !decode(w, r, &req) {
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.failDNS {
			reply(w, http.StatusInternalServerError, client.Error{Error: "dns store broken"})
			return
		}
		f.dns[req.Name] = req
		reply(w, http.StatusOK, struct{}{})
	})
	m.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		reply(w, http.StatusOK, f.ready)
	})
	return m
}

func (f *fakePeer) allocation(id, addr string) client.Allocation {
	f.mu.Lock()
	underlay := f.underlay[id]
	f.mu.Unlock()
	if underlay {
		return client.Allocation{ID: id, Address: addr, Gateway: "192.168.77.1", Pool: client.PoolUnderlay, Master: "eth0",
			HostAddress: "192.168.77.2", PodRange: "10.32.0.0/12"}
	}
	return client.Allocation{
		ID: id, Address: addr, Gateway: "10.32.0.1", Bridge: f.bridge, MTU: 1410,
		DNS: &client.PodDNS{Nameservers: []string{"10.32.0.1"}, Domain: "weft.local", Search: []string{"weft.local"}},
	}
}

// state returns copies of the fake's maps and lists.
func (f *fakePeer) state() (allocs map[string]string, dns map[string]client.DNSRequest, released []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	allocs = make(map[string]string, len(f.allocs))
	for k, v := range f.allocs {
		allocs[k] = v
	}
	dns = make(map[string]client.DNSRequest, len(f.dns))
	for k, v := range f.dns {
		dns[k] = v
	}
	return allocs, dns, append([]string(nil), f.released...)
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		reply(w, http.StatusBadRequest, client.Error{Error: err.Error()})
		return false
	}
	return true
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
