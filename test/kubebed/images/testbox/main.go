// Command testbox is the workload of the kubebed test cluster, one static
// binary (localhost/weft-test/testbox:1.0, entrypoint /testbox) with a mode
// per argument:
//
//	testbox [serve [-addr :8080] [-udp]]
//	                                 HTTP: GET / answers "host=H from=IP:PORT"
//	                                 (the hostname, and the client address the server saw);
//	                                 -udp: also answer every UDP datagram on the same
//	                                 port with that line
//	testbox get [-t 5s] [-k] URL     print the body; exit 1 on error or non-2xx
//	                                 (-k: do not verify the server's certificate)
//	testbox probe [-t 1s] [-until D -want ok|fail] tcp://IP:PORT|udp://IP:PORT...
//	                                 probe every target at once (TCP: a handshake; UDP:
//	                                 an answered datagram), one line a target:
//	                                 "tcp://IP:PORT ok" or "... fail REASON"; -until
//	                                 probes again until the result is -want and adds
//	                                 "after=DURATION"; exit 0 when every target was probed
//	testbox ping [-i 10ms] [-c N] [-W 1s] [-o FILE] IP
//	                                 ICMP echo over a raw socket (CAP_NET_RAW, which
//	                                 containers have by default); -c 0 runs until
//	                                 SIGTERM/SIGINT; -o rewrites FILE with the counts
//	                                 every 100 ms; prints the counts at the end
//	testbox lookup [-t 2s] NAME SERVER  DNS A lookup of NAME at SERVER (host:port),
//	                                 one address a line; exit 1 on error
//	testbox cat FILE                 print a file (the image has no shell)
//	testbox sleep                    block until SIGTERM/SIGINT
//
// The counts line of ping reads
//
//	sent=1000 received=998 lost=2 maxgap=31ms
//
// where maxgap is the longest time between two consecutive replies (or from
// the first send to the first reply), the length of the worst outage at the
// sending interval's resolution.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		serve(nil)
		return
	}
	args := os.Args[2:]
	var err error
	switch os.Args[1] {
	case "serve":
		serve(args)
	case "get":
		err = get(args)
	case "probe":
		err = probe(args)
	case "ping":
		err = ping(args)
	case "lookup":
		err = lookup(args)
	case "cat":
		err = cat(args)
	case "sleep":
		<-stopSignal()
	default:
		err = fmt.Errorf("unknown mode %q (serve, get, probe, ping, lookup, cat, sleep)", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "testbox:", err)
		os.Exit(1)
	}
}

// stopSignal returns a channel that is closed on SIGTERM or SIGINT (as PID
// 1 of a container, the default actions do not apply).
func stopSignal() <-chan struct{} {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	done := make(chan struct{})
	go func() { <-c; close(done) }()
	return done
}

func serve(args []string) {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	addr := fs.String("addr", ":8080", "listen address")
	udp := fs.Bool("udp", false, "also answer UDP datagrams on the same port")
	_ = fs.Parse(args)
	host, _ := os.Hostname()
	if *udp {
		go func() {
			if err := serveUDP(*addr, host); err != nil {
				fmt.Fprintln(os.Stderr, "testbox:", err)
				os.Exit(1)
			}
		}()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "host=%s from=%s\n", host, r.RemoteAddr)
	})
	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-stopSignal()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()
	fmt.Printf("testbox %s serving on %s\n", host, *addr)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, "testbox:", err)
		os.Exit(1)
	}
}

func get(args []string) error {
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	timeout := fs.Duration("t", 5*time.Second, "timeout")
	insecure := fs.Bool("k", false, "do not verify the server's certificate")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: testbox get [-t 5s] [-k] URL")
	}
	c := http.Client{Timeout: *timeout, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: *insecure}, // -k: the test API server's self-signed CA
	}}
	r, err := c.Get(fs.Arg(0))
	if err != nil {
		return err
	}
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	os.Stdout.Write(b)
	if err != nil {
		return err
	}
	if r.StatusCode/100 != 2 {
		return fmt.Errorf("GET %s: %s", fs.Arg(0), r.Status)
	}
	return nil
}

func lookup(args []string) error {
	fs := flag.NewFlagSet("lookup", flag.ContinueOnError)
	timeout := fs.Duration("t", 2*time.Second, "timeout")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return errors.New("usage: testbox lookup [-t 2s] NAME SERVER(host:port)")
	}
	server := fs.Arg(1)
	if _, _, err := net.SplitHostPort(server); err != nil {
		server = net.JoinHostPort(server, "53")
	}
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, server)
	}}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	ips, err := r.LookupIP(ctx, "ip4", fs.Arg(0))
	if err != nil {
		return err
	}
	for _, ip := range ips {
		fmt.Println(ip)
	}
	return nil
}

func cat(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: testbox cat FILE")
	}
	b, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(b)
	return err
}
