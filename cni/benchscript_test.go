package cni

import (
	"os"
	"os/exec"
	"testing"
)

// TestBenchScript runs scripts/bench-cni.sh with the built weft-cni against
// the fake peer in a throwaway host namespace. It is a harness for the
// script, not a gate: run it with WEFT_BENCH_SCRIPT=1 (and N=100).
func TestBenchScript(t *testing.T) {
	if os.Getenv("WEFT_BENCH_SCRIPT") == "" {
		t.Skip("set WEFT_BENCH_SCRIPT=1 to run scripts/bench-cni.sh against the fake peer")
	}
	b := newTestbed(t)
	cmd := exec.Command("../scripts/bench-cni.sh")
	cmd.Env = append(os.Environ(), "WEFT_SOCKET="+b.peer.socket, "WEFT_NETNS="+b.host, "WEFT_CNI="+binary(t))
	out, err := cmd.CombinedOutput()
	t.Logf("bench-cni.sh:\n%s", out)
	if err != nil {
		t.Fatalf("bench-cni.sh: %v", err)
	}
}
