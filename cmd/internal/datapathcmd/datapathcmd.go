// Package datapathcmd is the userspace WireGuard datapath command, shared
// by `weft datapath` and the weft-datapath binary.
//
// weft-datapath exists because every process of the weft binary runs the
// initialisation of every package it links, Kubernetes' client libraries
// included (~30 ms of CPU warm, more under load): in a start of 40 peers
// on 2 cores Go package initialisation was 11 % of the peers' CPU, half of
// it in the datapath processes, which use none of it. weft-datapath links
// only router/wg; `weft launch` starts it when it lies next to the weft
// binary (wg.DatapathCommand), and `weft datapath` stays for the others
// (the Kubernetes manifest's datapath container among them).
package datapathcmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/weftmesh/weft/router/wg"
)

// ErrUsage marks a command-line error (exit code 2).
var ErrUsage = errors.New("usage")

// Run parses args (the flags after the command name; prog names it in
// messages) and serves the datapath until SIGINT or SIGTERM.
func Run(prog string, args []string) error {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	iface := fs.String("iface", wg.DefaultConfig().Name, "interface")
	mtu := fs.Int("mtu", 1420, "MTU")
	logLevel := fs.String("log-level", "info", "log level")
	idle := fs.Bool("idle-with-kernel", false, "if the kernel has WireGuard, serve nothing and wait for a signal (the peer uses the kernel device)")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", ErrUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", ErrUsage, fs.Args())
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("%w: --log-level %q: %v", ErrUsage, *logLevel, err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if *idle {
		kernel, err := wg.KernelSupported("weft-wgprobe")
		if err != nil {
			return err
		}
		if kernel {
			log.Info("the kernel has WireGuard: the peer uses a kernel device, so this datapath idles", "iface", *iface)
			<-ctx.Done()
			return nil
		}
	}
	return wg.RunDatapath(ctx, *iface, *mtu, log)
}
