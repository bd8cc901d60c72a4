// Command weft-datapath is weft's userspace WireGuard datapath process,
// the same command as `weft datapath` in a binary that links only the
// datapath (see cmd/internal/datapathcmd). `weft launch` starts it when it
// lies next to the weft binary.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/weftmesh/weft/cmd/internal/datapathcmd"
)

func main() {
	if err := datapathcmd.Run("weft-datapath", os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "weft-datapath:", err)
		if errors.Is(err, datapathcmd.ErrUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}
