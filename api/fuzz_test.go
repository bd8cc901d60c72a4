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

// FuzzRequestBody sends arbitrary bytes to every mutating route: the answer
// is always a JSON document with status 200, 400, 404 or 409, never a 5xx
// or a panic.
func FuzzRequestBody(f *testing.F) {
	for _, r := range postRoutes {
		f.Add(r.path, []byte(r.body))
	}
	f.Add("/ip/allocate", []byte(`{"id":"a","ifname":"eth0","pod":"p.ns"}`))
	f.Add("/ip/gc", []byte(`{"keep":null}`))
	f.Add("/dns/remove", []byte(`{"container_id":"x"}`))
	f.Add("/connect", []byte(`{"peers":[1,2]}`))
	f.Add("/ip/release", []byte("\xff\xfe{"))
	f.Add("/rmpeer", []byte(`[]`))
	cfg := api.DefaultConfig()
	cfg.Socket, cfg.HTTPAddr = "", "127.0.0.1:0"
	srv, err := api.New(cfg, api.All(apitest.NewFake()))
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
		case 200, 400, 404, 405, 409:
		default:
			t.Fatalf("POST %q %q = %d %s", path, body, rec.Code, rec.Body)
		}
		if rec.Code != 200 {
			var e client.Error
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == "" {
				t.Fatalf("POST %q %q = %d with body %q; want a client.Error", path, body, rec.Code, rec.Body)
			}
		}
	})
}
