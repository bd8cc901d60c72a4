package test

import (
	"fmt"
	"os"
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
		c0 := testbed.CPUTicks(b, pid)
		time.Sleep(10 * time.Second)
		c1 := testbed.CPUTicks(b, pid)
		b.ReportMetric(float64(c1-c0)/100/10*100, "%cpu-idle")
		b.ReportMetric(float64(testbed.RSSKiB(b, pid))/1024, "MiB-rss")
	}
}
