package test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/test/testbed"
)

// BenchmarkRelay is issue 18's benchmark, for wireguard and vxlan, on one
// 3-host bed each: TCP throughput (iperf3, 1 stream, 5 s) and RTT (median
// of 100 pings at 20 ms) between pods on h1 and h3, direct and then
// relayed through h2 (h1-h3 blocked), rounds interleaved; then the time
// from blocking h1-h3 until the pods talk again, over RELAY_TRIALS trials
// (default 10), read from a ping every 50 ms; RELAY_ROUNDS (default 3)
// rounds of TCP and RTT.
//
//	go test -run - -bench Relay -benchtime 1x ./test/
func BenchmarkRelay(b *testing.B) {
	for _, transport := range []string{"wireguard", "vxlan"} {
		b.Run(transport, func(b *testing.B) {
			for range b.N {
				benchRelay(b, transport)
			}
		})
	}
}

func benchRelay(b *testing.B, transport string) {
	bed := testbed.New(b, 3)
	launchTransport(b, bed, transport)
	h1, h3 := bed.Hosts[0], bed.Hosts[2]
	p1, p3 := h1.AddPod(b, "p1"), h3.AddPod(b, "p1")
	waitViaB(b, h1, "h3", "", 90*time.Second)
	if err := testutil.Poll(60*time.Second, func() error { return p1.Ping(p3.Addr.Addr()) }); err != nil {
		b.Fatal(err)
	}
	var tcp, rtt [2][]float64 // [direct, relayed]
	for range envInt("RELAY_ROUNDS", 3) {
		for mode, relayed := range []bool{false, true} {
			if relayed {
				h1.Block(h3)
				waitViaB(b, h1, "h3", "h2", 60*time.Second)
				waitViaB(b, h3, "h1", "h2", 60*time.Second)
			}
			if err := testutil.Poll(30*time.Second, func() error { return p1.Ping(p3.Addr.Addr()) }); err != nil {
				b.Fatal(err)
			}
			tcp[mode] = append(tcp[mode], iperfBits(b, p1, p3))
			rtt[mode] = append(rtt[mode], pingMedianMs(b, p1, p3))
			if relayed {
				h1.Unblock(h3)
				waitViaB(b, h1, "h3", "", 90*time.Second)
				waitViaB(b, h3, "h1", "", 90*time.Second)
			}
		}
	}
	med := func(v []float64) float64 { s := slices.Clone(v); slices.Sort(s); return s[len(s)/2] }
	b.ReportMetric(med(tcp[0])/1e6, "Mbit/s-direct")
	b.ReportMetric(med(tcp[1])/1e6, "Mbit/s-relayed")
	b.ReportMetric(med(tcp[1])/med(tcp[0]), "tcp-ratio")
	b.ReportMetric(med(rtt[0]), "ms-rtt-direct")
	b.ReportMetric(med(rtt[1]), "ms-rtt-relayed")
	b.Logf("%s: TCP direct %.0f relayed %.0f Mbit/s; RTT direct %v relayed %v ms", transport, scale(tcp[0], 1e-6), scale(tcp[1], 1e-6), rtt[0], rtt[1])

	trials := envInt("RELAY_TRIALS", 10)
	var heal []float64
	for range trials {
		waitViaB(b, h1, "h3", "", 90*time.Second)
		waitViaB(b, h3, "h1", "", 90*time.Second)
		d := blockToTalk(b, h1, h3, p1, p3)
		heal = append(heal, d.Seconds())
		h1.Unblock(h3)
	}
	slices.Sort(heal)
	p99 := heal[min(len(heal)-1, (len(heal)*99+99)/100-1)]
	b.ReportMetric(heal[len(heal)/2], "s-block-to-talk-p50")
	b.ReportMetric(p99, "s-block-to-talk-p99")
	b.Logf("%s: block → pods talk again, %d trials (s): %v", transport, trials, heal)
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func waitViaB(b *testing.B, h *testbed.Host, name, want string, within time.Duration) {
	b.Helper()
	testutil.Eventually(b, within, fmt.Sprintf("%s to reach %s via %q", h.Name, name, want), func() error {
		got, _, err := via(h, name)
		if err == nil && got != want {
			err = fmt.Errorf("via %q", got)
		}
		return err
	})
}

// blockToTalk blocks h1-h3 while p1 pings p3 every 50 ms, and returns the
// time from the block to the first answered ping after it.
func blockToTalk(b *testing.B, h1, h3 *testbed.Host, p1, p3 *testbed.Pod) time.Duration {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", "--net=/var/run/netns/"+p1.NS, "--",
		"ping", "-D", "-n", "-i", "0.05", "-W", "1", p3.Addr.Addr().String())
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	replies := make(chan time.Time, 4096)
	go func() {
		re := regexp.MustCompile(`^\[(\d+)\.(\d+)\] \d+ bytes from`)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				sec, _ := strconv.ParseInt(m[1], 10, 64)
				frac, _ := strconv.ParseFloat("0."+m[2], 64)
				replies <- time.Unix(sec, int64(frac*1e9))
			}
		}
		close(replies)
	}()
	// A first answer shows the direct path works before the block.
	select {
	case <-replies:
	case <-ctx.Done():
		b.Fatal("no ping answered before the block")
	}
	blocked := time.Now()
	h1.Block(h3) // four nft runs: the block is whole only when it returns
	inPlace := time.Now()
	for r := range replies {
		if r.After(inPlace.Add(20 * time.Millisecond)) { // answers in flight before the block was whole do not count
			return r.Sub(blocked)
		}
	}
	b.Fatal("pods did not talk again within 90 s of the block")
	return 0
}

// iperfBits runs one 5 s TCP stream from src to dst and returns bits/s.
func iperfBits(b *testing.B, src, dst *testbed.Pod) float64 {
	b.Helper()
	srv := make(chan string, 1)
	go func() { out, _ := dst.Exec("timeout", "20", "iperf3", "-s", "-1"); srv <- out }()
	var res struct {
		End struct {
			SumReceived struct {
				Bps float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	err := testutil.Poll(10*time.Second, func() error {
		out, err := src.Exec("iperf3", "-c", dst.Addr.Addr().String(), "-t", "5", "-J")
		if err != nil {
			return fmt.Errorf("iperf3: %v: %s", err, out)
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			return fmt.Errorf("iperf3 output: %v: %.300s", err, out)
		}
		if res.End.SumReceived.Bps == 0 {
			return fmt.Errorf("iperf3 measured nothing: %.600s", out)
		}
		return nil
	})
	<-srv
	if err != nil {
		b.Fatal(err)
	}
	return res.End.SumReceived.Bps
}

// pingMedianMs returns the median RTT of 100 pings 20 ms apart.
func pingMedianMs(b *testing.B, src, dst *testbed.Pod) float64 {
	b.Helper()
	out, err := src.Exec("ping", "-n", "-c", "100", "-i", "0.02", "-W", "1", dst.Addr.Addr().String())
	if err != nil {
		b.Fatalf("ping: %v: %s", err, out)
	}
	var rtts []float64
	for _, m := range regexp.MustCompile(`time=([0-9.]+) ms`).FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(m[1], 64)
		rtts = append(rtts, v)
	}
	if len(rtts) == 0 {
		b.Fatalf("no RTTs in %q", strings.TrimSpace(out))
	}
	slices.Sort(rtts)
	return rtts[len(rtts)/2]
}

func scale(v []float64, f float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = x * f
	}
	return out
}
