package api_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/weftmesh/weft/api"
	"github.com/weftmesh/weft/api/apitest"
	"github.com/weftmesh/weft/api/client"
)

// FuzzRequestBody POSTs arbitrary bytes to any path. With a backend that
// never fails, the answer is 200 after one backend call, or 400, 404 or
// 405 with a client.Error body and no backend call; never a 5xx or a panic.
func FuzzRequestBody(f *testing.F) {
	for _, r := range apiRoutes {
		if r.method == http.MethodPost {
			f.Add(r.path, []byte(r.body))
		}
	}
	f.Add("/ip/allocate", []byte(`{"id":"a","ifname":"eth0","pod":"p.ns"}`))
	f.Add("/ip/gc", []byte(`{"keep":null}`))
	f.Add("/dns/remove", []byte(`{"container_id":"x"}`))
	f.Add("/connect", []byte(`{"peers":[1,2]}`))
	f.Add("/ip/release", []byte("\xff\xfe{"))
	f.Add("/rmpeer", []byte(`[]`))
	cfg := api.DefaultConfig()
	cfg.Socket, cfg.HTTPAddr = "", "127.0.0.1:0"
	fakes := apitest.New()
	srv, err := api.New(cfg, fakes.Backends())
	if err != nil {
		f.Fatal(err)
	}
	defer srv.Close()
	h := srv.Handler(false)
	f.Fuzz(func(t *testing.T, path string, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "http://weft/", bytes.NewReader(body))
		req.URL.Path = path
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case 200, 400, 404, 405:
		default:
			t.Fatalf("POST %q %q = %d %s", path, body, rec.Code, rec.Body)
		}
		calls := fakes.Take()
		if rec.Code == 200 && len(calls) != 1 {
			t.Fatalf("POST %q %q = 200 after calls %q; want one backend call", path, body, calls)
		}
		if rec.Code != 200 {
			var e client.Error
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == "" {
				t.Fatalf("POST %q %q = %d with body %q; want a client.Error", path, body, rec.Code, rec.Body)
			}
			if calls != nil {
				t.Fatalf("POST %q %q = %d after calls %q; want none: refused before the backend", path, body, rec.Code, calls)
			}
		}
	})
}
