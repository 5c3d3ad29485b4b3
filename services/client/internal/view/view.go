// Package view shows how calls spread over instances: a table redrawn in
// place on a terminal, one summary line at a time where output is a pipe
// or a log, or a JSON snapshot per interval for a program that draws its
// own view.
package view

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/rollcall/rollcall/services/client/internal/instances"
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

// Snapshot is what the json view writes, one line per interval, for a
// program that draws its own view (the local stack's live view): the
// figures of each instance, the resolver's list with each instance's
// state, and the events since the previous snapshot.
type Snapshot struct {
	At        time.Time         `json:"at"`
	Calls     int               `json:"calls"`      // since the start
	Errors    int               `json:"errors"`     // since the start
	PerSecond float64           `json:"per_second"` // over the recent window
	P50Ms     float64           `json:"p50_ms"`     // over the recent window
	P99Ms     float64           `json:"p99_ms"`     // over the recent window
	Instances []Figures         `json:"instances"`
	Events    []instances.Event `json:"events,omitempty"`
}

// Figures are one instance's: totals since the start, rates and
// percentiles over the recent window.
type Figures struct {
	ID string `json:"id"`
	// Addr is empty for an instance no longer listed.
	Addr string `json:"addr,omitempty"`
	// State is one of package instances' states, Gone for an instance
	// that answered calls and is no longer listed, or empty for the row
	// of calls that no instance answered (stats.Unknown).
	State     string     `json:"state"`
	Calls     int        `json:"calls"`
	Errors    int        `json:"errors"`
	PerSecond float64    `json:"per_second"`
	Share     float64    `json:"share"` // of the window's calls, 0..1
	P50Ms     float64    `json:"p50_ms"`
	P99Ms     float64    `json:"p99_ms"`
	FirstCall *time.Time `json:"first_call,omitempty"`
}

// Gone is the state of an instance that answered calls and is no longer
// listed.
const Gone = "gone"

// NewSnapshot joins the figures since the start (total) and over the
// recent window with the listed instances and the events.
func NewSnapshot(total, window stats.Summary, listed []instances.Instance, events []instances.Event) Snapshot {
	s := Snapshot{At: time.Now(), Calls: total.Calls, Errors: total.Errors, PerSecond: window.PerSecond,
		P50Ms: window.P50Ms, P99Ms: window.P99Ms, Events: events}
	byID := map[string]*Figures{}
	row := func(id string) *Figures {
		f, ok := byID[id]
		if !ok {
			f = &Figures{ID: id, State: Gone}
			if id == stats.Unknown {
				f.State = ""
			}
			byID[id] = f
		}
		return f
	}
	for _, in := range listed {
		f := row(in.ID)
		f.Addr, f.State = in.Addr, in.State
	}
	for _, r := range total.Instances {
		f := row(r.Instance)
		f.Calls, f.Errors = r.Calls, r.Errors
		if !r.First.IsZero() {
			first := r.First
			f.FirstCall = &first
		}
	}
	for _, r := range window.Instances {
		f := row(r.Instance)
		f.Share, f.P50Ms, f.P99Ms = r.Share, r.P50Ms, r.P99Ms
		if window.Seconds > 0 {
			f.PerSecond = float64(r.Calls) / window.Seconds
		}
	}
	for _, id := range slices.Sorted(maps.Keys(byID)) {
		s.Instances = append(s.Instances, *byID[id])
	}
	return s
}

// JSON writes s on one line.
func JSON(w io.Writer, s Snapshot) error {
	return json.NewEncoder(w).Encode(s)
}
