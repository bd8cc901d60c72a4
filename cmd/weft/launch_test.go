package main

import "testing"

func TestKubeMode(t *testing.T) {
	tests := []struct {
		name                string
		flagSet, flagVal    bool
		kubeconfig, svcHost string
		want, wantFail      bool
	}{
		{"plain host", false, false, "", "", false, false},
		{"in a pod", false, false, "", "10.96.0.1", true, false},
		{"kubeconfig", false, false, "/etc/weft/kubeconfig", "", true, false},
		{"--kubernetes outside a pod", true, true, "", "", true, false},
		{"--kubernetes=false in a pod", true, false, "", "10.96.0.1", false, false},
		{"--kubernetes=false with a kubeconfig", true, false, "/etc/weft/kubeconfig", "", false, true},
	}
	for _, tt := range tests {
		got, err := kubeMode(tt.flagSet, tt.flagVal, tt.kubeconfig, tt.svcHost)
		if got != tt.want || (err != nil) != tt.wantFail {
			t.Errorf("%s: kubeMode = %v, %v; want %v, fail %v", tt.name, got, err, tt.want, tt.wantFail)
		}
	}
}
