package cni

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/weftmesh/weft/api/client"
)

// commandTimeout bounds one CNI command, peer round trips included. The
// runtime retries a failed ADD, so failing is better than hanging.
const commandTimeout = 60 * time.Second

// About is printed when weft-cni runs without CNI_COMMAND.
const About = "weft-cni: weft's CNI plugin; it talks to the local weft peer ('weft launch') and is installed by 'weft setup-cni'"

// Main runs one CNI command from the environment and stdin, prints the
// result or a CNI error to stdout, and exits non-zero on error.
func Main() {
	skel.PluginMainFuncs(New(os.Stdout, nil).Funcs(), VersionInfo(), About)
}

// VersionInfo lists the spec versions weft-cni speaks.
func VersionInfo() version.PluginInfo { return version.PluginSupports(supportedVersions...) }

// Plugin runs CNI commands. Each method is one command, called by skel
// with the parsed environment; it writes its result to the plugin's stdout
// and returns a *types.Error on failure. Safe for concurrent use as long as
// the stdout writer is.
type Plugin struct {
	stdout io.Writer
	logger *slog.Logger // base logger; a config's logFile adds a file sink
}

// New returns a plugin writing results to stdout and logging to logger
// (nil = discard unless the network config names a logFile).
func New(stdout io.Writer, logger *slog.Logger) *Plugin {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Plugin{stdout: stdout, logger: logger}
}

// Funcs maps the CNI commands to the plugin's methods for skel.
func (p *Plugin) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: p.Add, Del: p.Del, Check: p.Check, Status: p.Status, GC: p.GC}
}

// invocation is one running command: its config, peer client, logger.
type invocation struct {
	ctx    context.Context
	conf   *Config
	peer   *client.Client
	log    *slog.Logger
	start  time.Time
	cancel func()
}

// begin parses the config and prepares the command's context and logger.
func (p *Plugin) begin(cmd string, args *skel.CmdArgs) (*invocation, error) {
	start := time.Now()
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		p.logger.Warn("bad network config", "component", "cni", "cmd", cmd, "err", err)
		return nil, err
	}
	log := p.logger
	closeLog := func() {}
	if conf.LogFile != "" {
		if f, err := openLog(conf.LogFile); err == nil {
			log = slog.New(slog.NewJSONHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug}))
			closeLog = func() { _ = f.Close() }
		}
	}
	log = log.With("component", "cni", "cmd", cmd, "container", args.ContainerID, "ifname", args.IfName)
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	return &invocation{
		ctx: ctx, conf: conf, peer: client.New(conf.Socket), log: log, start: start,
		cancel: func() { cancel(); closeLog() },
	}, nil
}

// end logs the outcome with the command's duration and releases resources.
func (inv *invocation) end(err error) error {
	d := time.Since(inv.start)
	if err != nil {
		inv.log.Error("failed", "err", err, "ms", d.Milliseconds())
	} else {
		inv.log.Info("done", "ms", d.Milliseconds())
	}
	inv.cancel()
	return err
}

// openLog opens path for appending, creating it and its directory.
func openLog(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
}
