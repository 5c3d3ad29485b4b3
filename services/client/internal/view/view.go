// Package view shows how calls spread over instances: a table redrawn in
// place on a terminal, or one summary line at a time where output is a
// pipe or a log.
package view

import (
	"fmt"
	"io"
	"strings"

	"github.com/rollcall/rollcall/services/client/internal/stats"
)

// Table writes the summary as a table with a bar per instance.
func Table(w io.Writer, s stats.Summary) {
	fmt.Fprintf(w, "%-34s %8s %7s %7s %9s %9s %9s  %s\n", "instance", "calls", "share", "errors", "p50", "p90", "p99", "")
	for _, r := range s.Instances {
		fmt.Fprintf(w, "%-34s %8d %6.1f%% %7d %7.2fms %7.2fms %7.2fms  %s\n",
			r.Instance, r.Calls, 100*r.Share, r.Errors, r.P50Ms, r.P90Ms, r.P99Ms, bar(r.Share, 30))
	}
	fmt.Fprintf(w, "%-34s %8d %7s %7d   %.0f calls/s over %.0fs\n", "total", s.Calls, "", s.Errors, s.PerSecond, s.Seconds)
	if s.Errors > 0 {
		fmt.Fprintf(w, "status codes: %v\n", s.Codes)
	}
}

// Line writes the summary on one line: each instance's share, then errors.
func Line(w io.Writer, s stats.Summary) {
	parts := make([]string, 0, len(s.Instances))
	for _, r := range s.Instances {
		parts = append(parts, fmt.Sprintf("%s %s %3.0f%%", r.Instance, bar(r.Share, 10), 100*r.Share))
	}
	fmt.Fprintf(w, "spread: %s | calls %d, errors %d, p99 %.1fms\n", strings.Join(parts, " | "), s.Calls, s.Errors, s.P99Ms)
}

// Live redraws a table in place on a terminal.
type Live struct {
	w     io.Writer
	lines int
}

// NewLive draws on w, which should be a terminal.
func NewLive(w io.Writer) *Live { return &Live{w: w} }

// Draw replaces the previous drawing with the table and the extra lines.
func (l *Live) Draw(s stats.Summary, extra []string) {
	var b strings.Builder
	Table(&b, s)
	for _, e := range extra {
		b.WriteString(e + "\n")
	}
	out := b.String()
	if l.lines > 0 {
		fmt.Fprintf(l.w, "\x1b[%dA\x1b[J", l.lines) // up, then clear to the end
	}
	io.WriteString(l.w, out)
	l.lines = strings.Count(out, "\n")
}

func bar(share float64, width int) string {
	n := int(share*float64(width) + 0.5)
	return strings.Repeat("█", n) + strings.Repeat("·", width-n)
}
