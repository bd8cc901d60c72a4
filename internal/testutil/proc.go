package testutil

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// StatusKiB returns a "kB" field of /proc/PID/status (VmRSS, VmHWM, ...)
// of pid, or of this process when pid is 0.
func StatusKiB(pid int, field string) (int64, error) {
	p := "/proc/self/status"
	if pid != 0 {
		p = "/proc/" + strconv.Itoa(pid) + "/status"
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("%s: no %s", p, field)
}
