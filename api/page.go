package api

import (
	"embed"
	"net/http"
)

// ui holds the status page: one HTML file with inline CSS, JS and SVG, no
// external assets, so it works on a machine without internet access.
//
//go:embed ui/index.html
var ui embed.FS

// handlePage serves the page; it needs no backend (it reads /status).
func handlePage(w http.ResponseWriter, r *http.Request) error {
	b, err := ui.ReadFile("ui/index.html")
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	// Everything is inline; nothing may be fetched from elsewhere.
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:")
	h.Set("X-Frame-Options", "DENY")
	w.WriteHeader(http.StatusOK)
	w.Write(b)
	return nil
}
