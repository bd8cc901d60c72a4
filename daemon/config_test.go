package daemon

import (
	"testing"
)

func TestSplitHostPort(t *testing.T) {
	tests := []struct {
		in       string
		host     string
		port     int
		wantFail bool
	}{
		{"0.0.0.0:6783", "0.0.0.0", 6783, false},
		{"10.0.0.1", "10.0.0.1", 6783, false}, // a bare host takes the default port, as PEERs do
		{"10.0.0.1:7000", "10.0.0.1", 7000, false},
		{"[fd00::1]:7000", "fd00::1", 7000, false},
		{"fd00::1", "fd00::1", 6783, false},
		{"[fd00::1]", "fd00::1", 6783, false},
		{"host.example:x", "", 0, true},
		{"not an address", "", 0, true},
		{"10.0.0.1:70000", "", 0, true},
	}
	for _, tt := range tests {
		h, p, err := splitHostPort(tt.in)
		if (err != nil) != tt.wantFail || h != tt.host || p != tt.port {
			t.Errorf("splitHostPort(%q) = %q, %d, %v; want %q, %d, fail %v", tt.in, h, p, err, tt.host, tt.port, tt.wantFail)
		}
	}
	cfg := DefaultConfig()
	cfg.Listen = "10.0.0.1"
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate with --listen 10.0.0.1: %v", err)
	}
}
