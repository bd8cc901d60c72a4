package test

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/test/testbed"
)

// BenchmarkPeerIdle launches a 5-host secure mesh and reports one peer's
// resident memory and CPU use while the mesh is idle (10 s window).
//
//	go test -run - -bench PeerIdle -benchtime 1x ./test/
func BenchmarkPeerIdle(b *testing.B) {
	for i := 0; i < b.N; i++ {
		bed := testbed.New(b, 5)
		h1 := bed.Hosts[0]
		h1.Launch(b)
		var secret string
		testutil.Eventually(b, 20*time.Second, "secret", func() error {
			s, err := os.ReadFile(h1.Dir + "/data/secret")
			secret = bed.Dir + "/secret"
			if err == nil {
				err = os.WriteFile(secret, s, 0o600)
			}
			return err
		})
		for j, h := range bed.Hosts[1:] {
			h.Launch(b, "--password-file", secret, bed.Hosts[j].Addr.String())
		}
		testutil.Eventually(b, 60*time.Second, "5 alive", func() error {
			for _, h := range bed.Hosts {
				if n, err := h.AliveCount(); err != nil || n != 5 {
					return fmt.Errorf("%s: %d %v", h.Name, n, err)
				}
			}
			return nil
		})
		time.Sleep(5 * time.Second) // settle: bootstrap, bridge, first handshakes
		pid := bed.Hosts[2].PID()
		c0 := cpuTicks(b, pid)
		time.Sleep(10 * time.Second)
		c1 := cpuTicks(b, pid)
		b.ReportMetric(float64(c1-c0)/100/10*100, "%cpu-idle")
		b.ReportMetric(float64(rssKiB(b, pid))/1024, "MiB-rss")
	}
}

func cpuTicks(b *testing.B, pid int) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}

func rssKiB(b *testing.B, pid int) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			n, _ := strconv.ParseInt(strings.Fields(l)[1], 10, 64)
			return n
		}
	}
	return 0
}
