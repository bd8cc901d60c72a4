// Command weft runs this machine's weft peer (`weft launch`) and is the
// operator's CLI for it. Every CLI command reaches the peer through its
// control socket (--socket PATH, WEFT_SOCKET, default /run/weft/weft.sock),
// accepted before or after the command words.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/weftmesh/weft/api/client"
)

const usage = `weft — a decentralized overlay network for containers and pods

Usage:
  weft launch [flags] [PEER...]     run this machine's peer (foreground)
  weft status [peers|ipam|dns|kube|policy] [--json]
  weft connect PEER... | weft forget PEER...
  weft rmpeer NAME                  reclaim a dead peer's address space
  weft ip allocate ID | ip release ID | ip lookup ID   [--json]
  weft dns add NAME IP | dns remove NAME [IP] | dns lookup NAME
  weft policy drops [--json]        the last packets NetworkPolicy dropped on this node
  weft policy explain SRC DST PORT/PROTO   verdict and deciding policies (SRC, DST: ns/pod or IP)
  weft setup-cni [--bin-dir D] [--conf-dir D] [--cni-bin F]
  weft reset [--data-dir D]         remove everything weft created on this host
  weft version

Global flags (anywhere): --socket PATH (or WEFT_SOCKET), --json
Run 'weft launch --help' for the peer's flags.
`

func main() {
	os.Exit(run(os.Args[1:]))
}

// run executes one command and returns the exit code.
func run(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "launch":
		err = launch(args[1:])
	case "datapath":
		err = datapath(args[1:])
	case "forward":
		err = forward(args[1:])
	case "setup-cni":
		err = setupCNI(args[1:])
	case "reset":
		err = reset(args[1:])
	case "version", "--version":
		fmt.Println("weft", versionString())
		return 0
	case "help", "-h", "--help":
		fmt.Print(usage)
		return 0
	default:
		g, rest, perr := globals(args)
		if perr != nil {
			err = perr
			break
		}
		err = cli(g, rest)
	}
	if err != nil {
		var ue usageError
		fmt.Fprintln(os.Stderr, "weft:", err)
		if errors.As(err, &ue) {
			return 2
		}
		return 1
	}
	return 0
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg + " (see 'weft help')" }

// global holds the flags every CLI command accepts anywhere.
type global struct {
	socket string
	json   bool
}

// globals extracts --socket and --json from anywhere in args.
func globals(args []string) (global, []string, error) {
	g := global{socket: os.Getenv("WEFT_SOCKET")}
	if g.socket == "" {
		g.socket = client.DefaultSocket
	}
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--json" || a == "-json":
			g.json = true
		case a == "--socket" || a == "-socket":
			if i+1 >= len(args) {
				return g, nil, usageError{"--socket needs a path"}
			}
			g.socket = args[i+1]
			i++
		case strings.HasPrefix(a, "--socket="), strings.HasPrefix(a, "-socket="):
			g.socket = a[strings.Index(a, "=")+1:]
		default:
			rest = append(rest, a)
		}
	}
	return g, rest, nil
}

func ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 90_000_000_000)
}
