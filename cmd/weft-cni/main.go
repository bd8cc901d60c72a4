// Command weft-cni is weft's CNI plugin. The container runtime executes it
// once per command with the CNI environment and the network config on
// stdin; all logic lives in package cni.
package main

import (
	"runtime"

	"github.com/weftmesh/weft/cni"
)

// init pins the main goroutine to the main OS thread before anything else
// runs: network namespace membership is per thread, and a plugin that ever
// enters a pod's namespace (pkg/ns does for some operations) must not have
// the Go scheduler move host-side work onto a thread left in that namespace.
func init() { runtime.LockOSThread() }

func main() { cni.Main() }
