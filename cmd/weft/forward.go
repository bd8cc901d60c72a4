package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
)

// forward is the hidden `weft forward` the demo uses to make each peer's
// status page (listening inside a host's network namespace) reachable from
// the machine's own browser: it listens on a local address in the current
// namespace and dials the target from inside --netns.
func forward(args []string) error {
	fs := flag.NewFlagSet("weft forward", flag.ContinueOnError)
	nsPath := fs.String("netns", "", "network namespace file to dial from (/var/run/netns/NAME)")
	listen := fs.String("listen", "127.0.0.1:0", "local address to listen on")
	to := fs.String("to", "", "target host:port inside the namespace")
	if err := fs.Parse(args); err != nil || *nsPath == "" || *to == "" {
		return usageError{"weft forward --netns PATH --listen ADDR --to HOST:PORT"}
	}
	dials := make(chan chan net.Conn)
	errc := make(chan error, 1)
	go dialer(*nsPath, *to, dials, errc) // a thread that lives in the namespace
	if err := <-errc; err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", *listen, err)
	}
	fmt.Printf("forwarding %s -> %s in %s\n", ln.Addr(), *to, *nsPath)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() { <-ctx.Done(); ln.Close() }()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		reply := make(chan net.Conn, 1)
		dials <- reply
		go splice(c, <-reply)
	}
}

// dialer locks its OS thread into the namespace and serves dial requests
// from there; sockets keep the namespace they were created in.
func dialer(nsPath, to string, reqs chan chan net.Conn, errc chan<- error) {
	runtime.LockOSThread() // never unlocked: the thread dies with the namespace in it
	h, err := netns.GetFromPath(nsPath)
	if err == nil {
		err = netns.Set(h)
	}
	errc <- err
	if err != nil {
		return
	}
	for reply := range reqs {
		c, err := net.DialTimeout("tcp", to, 5*time.Second)
		if err != nil {
			fmt.Fprintln(os.Stderr, "weft forward:", err)
			reply <- nil
			continue
		}
		reply <- c
	}
}

func splice(a, b net.Conn) {
	if b == nil {
		a.Close()
		return
	}
	go func() { _, _ = io.Copy(b, a); b.Close() }()
	_, _ = io.Copy(a, b)
	a.Close()
}
