// Package logs makes the slog logger every rollcall process uses: text on
// a terminal, JSON otherwise (for log collectors), at the level asked.
// Main runs a command with it, from its configuration to its stop.
package logs

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// Config is how a process logs.
type Config struct {
	Level  string
	Format string
}

// RegisterFlags adds -log-level and -log-format to fs (defaults info and
// auto) and their environment fallbacks LOG_LEVEL and LOG_FORMAT to env.
func (c *Config) RegisterFlags(fs *flag.FlagSet, env map[string]string) {
	fs.StringVar(&c.Level, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.Format, "log-format", "auto", "text, json, or auto (text on a terminal)")
	env["log-level"], env["log-format"] = "LOG_LEVEL", "LOG_FORMAT"
}

// New returns a logger writing to w. format is "text", "json", or "auto"
// (text on a terminal, JSON otherwise).
func New(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return nil, fmt.Errorf("invalid log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch {
	case format == "text" || format == "auto" && IsTerminal(w):
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case format == "json" || format == "auto":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("invalid log format %q: want text, json or auto", format)
}

// IsTerminal reports whether w is a terminal: such output is for a person,
// not a program.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
