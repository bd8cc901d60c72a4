// Command pause is the sandbox ("pause") container of the kubebed test
// cluster: containerd's sandbox_image. It holds the pod's namespaces open,
// reaps the zombies of processes that are re-parented to it, and exits on
// SIGINT or SIGTERM. Built static (CGO_ENABLED=0) and packed into an image
// by test/kubebed (localhost/weft-test/pause:1.0).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}
