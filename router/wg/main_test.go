package wg

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// The test binary doubles as the two helper processes the root tests need:
//
//	TEST_BINARY datapath-helper --iface NAME --mtu N   (what `weft datapath` runs)
//	TEST_BINARY ensure-helper JSON                     (a control plane to kill -9)
func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "datapath-helper":
			os.Exit(datapathHelper(os.Args[2:]))
		case "ensure-helper":
			os.Exit(ensureHelper(os.Args[2:]))
		}
	}
	goleak.VerifyTestMain(m)
}

func datapathHelper(args []string) int {
	fs := flag.NewFlagSet("datapath", flag.ContinueOnError)
	iface := fs.String("iface", "", "interface name")
	mtu := fs.Int("mtu", 1420, "MTU in bytes")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if err := RunDatapath(context.Background(), *iface, *mtu, logger); err != nil {
		logger.Error("datapath failed", "err", err)
		return 1
	}
	return 0
}

// helperSpec is what ensure-helper gets as its argument.
type helperSpec struct {
	Config     Config
	PrivateKey string
	ListenPort int
	Peers      []Peer
}

func ensureHelper(args []string) int {
	var spec helperSpec
	if len(args) != 1 || json.Unmarshal([]byte(args[0]), &spec) != nil {
		fmt.Fprintln(os.Stderr, "usage: ensure-helper JSON")
		return 2
	}
	dev, err := Ensure(context.Background(), spec.Config)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ensure:", err)
		return 1
	}
	if err := dev.Configure(spec.PrivateKey, spec.ListenPort, spec.Peers); err != nil {
		fmt.Fprintln(os.Stderr, "configure:", err)
		return 1
	}
	fmt.Println("ready")
	select {} // until killed
}
