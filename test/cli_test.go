package test

import (
	"bytes"
	"os/exec"

	"github.com/weftmesh/weft/test/testbed"
)

// runWeft runs the weft CLI in the root namespace (only for commands that
// touch no network: they talk to a unix socket).
func runWeft(args ...string) (string, string, error) {
	cmd := exec.Command(testbed.Binary("weft"), args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	return o.String(), e.String(), err
}
