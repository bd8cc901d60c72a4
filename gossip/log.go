package gossip

import (
	"bytes"
	"context"
	"log"
	"log/slog"
)

// memberlist logs through a *log.Logger with "[LEVEL] memberlist: ..."
// prefixes; this writer maps them to slog levels so its chatter stays at
// Debug and its errors are visible.
type logWriter struct{ l *slog.Logger }

func newStdLogger(l *slog.Logger) *log.Logger { return log.New(logWriter{l}, "", 0) }

func (w logWriter) Write(p []byte) (int, error) {
	msg := string(bytes.TrimSpace(p))
	lvl := slog.LevelDebug
	switch {
	case bytes.Contains(p, []byte("[ERR]")):
		lvl = slog.LevelWarn
	case bytes.Contains(p, []byte("[WARN]")):
		lvl = slog.LevelInfo
	}
	w.l.Log(context.Background(), lvl, msg, "lib", "memberlist")
	return len(p), nil
}
