// Command benchserver runs a real dns.Server loaded with the names of a
// hosts file ("IP name..." lines), with a no-op transport, so that
// scripts/bench-dns.sh can measure it against dnsmasq before the weft
// daemon exists.
//
//	go run ./dns/internal/benchserver -listen 127.0.0.1:5301 -hosts names.hosts
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/weftmesh/weft/dns"
)

type nopTransport struct{}

func (nopTransport) Broadcast([]byte) {}

func main() {
	listen := flag.String("listen", "127.0.0.1:5301", "address to serve (UDP and TCP)")
	hosts := flag.String("hosts", "", "hosts file with the names to load")
	domain := flag.String("domain", "weft.local.", "DNS domain")
	upstream := flag.String("upstream", "127.0.0.1:1", "upstream resolver (never the machine's; unused by the benchmark)")
	sockets := flag.Int("sockets", 0, "UDP sockets with SO_REUSEPORT (0 = one per CPU)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile to this file")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "benchserver:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	if err := run(*listen, *hosts, *domain, *upstream, *sockets); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "benchserver:", err)
		os.Exit(1)
	}
}

func run(listen, hosts, domain, upstream string, sockets int) error {
	cfg := dns.DefaultConfig()
	cfg.Self = 1
	cfg.Domain = domain
	cfg.Listen = []string{listen}
	cfg.Upstreams = []string{upstream}
	cfg.UDPSockets = sockets
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := dns.New(cfg, nopTransport{})
	if err != nil {
		return err
	}
	n, err := load(srv, hosts)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(os.Stderr, "benchserver: %d records, serving %s\n", n, listen)
	return srv.Run(ctx)
}

func load(srv *dns.Server, path string) (int, error) {
	if path == "" {
		return 0, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		addr, err := netip.ParseAddr(fields[0])
		if err != nil {
			return n, fmt.Errorf("%s: %w", path, err)
		}
		for _, name := range fields[1:] {
			if err := srv.Add(name, addr, ""); err != nil {
				return n, fmt.Errorf("%s: %w", path, err)
			}
			n++
		}
	}
	return n, sc.Err()
}
