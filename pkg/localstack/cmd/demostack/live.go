package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
)

// States of a process, as the stack saw it end.
const (
	procRunning = "running"
	procStopped = "stopped" // stopped by the stack, or exited with status 0
	procKilled  = "killed"  // by a signal the stack did not send
	procFailed  = "failed"  // exited with an error status
)

// Messages to the live view.
type (
	// eventMsg is a line of the stack's own (Say).
	eventMsg struct {
		At   time.Time
		Text string
	}
	// procMsg tells that a process started or ended.
	procMsg struct {
		Name  string
		PID   int
		State string
	}
	// etcdMsg is the endpoint of the stack's etcd.
	etcdMsg string
	// stoppedMsg: the stack has stopped; the view ends.
	stoppedMsg struct{}
)

// clientSnapshot is a line of the client's json view
// (services/client/internal/view.Snapshot), the fields the view shows.
type clientSnapshot struct {
	At        time.Time         `json:"at"`
	Calls     int               `json:"calls"`
	Errors    int               `json:"errors"`
	PerSecond float64           `json:"per_second"`
	P50Ms     float64           `json:"p50_ms"`
	P99Ms     float64           `json:"p99_ms"`
	Instances []instanceFigures `json:"instances"`
	Events    []clientEvent     `json:"events"`
}

type instanceFigures struct {
	ID        string     `json:"id"`
	Addr      string     `json:"addr"`
	State     string     `json:"state"` // as the client sees it: ready, stalled, draining, unreachable, gone...
	Calls     int        `json:"calls"`
	Errors    int        `json:"errors"`
	PerSecond float64    `json:"per_second"`
	Share     float64    `json:"share"`
	P50Ms     float64    `json:"p50_ms"`
	P99Ms     float64    `json:"p99_ms"`
	FirstCall *time.Time `json:"first_call"`
}

// clientEvent is a change the client's resolver saw.
type clientEvent struct {
	At       time.Time `json:"at"`
	Kind     string    `json:"event"`
	Instance string    `json:"instance"`
	Detail   string    `json:"detail"`
}

// parseSnapshot reads a line of the client's json view.
func parseSnapshot(line string) (clientSnapshot, error) {
	var s clientSnapshot
	if err := json.Unmarshal([]byte(line), &s); err != nil {
		return s, fmt.Errorf("client snapshot: %w", err)
	}
	if s.At.IsZero() {
		return s, errors.New("client snapshot without a time")
	}
	return s, nil
}

// text says what the event is, in a line of the view.
func (e clientEvent) text() string {
	switch {
	case e.Instance != "" && e.Detail != "":
		return fmt.Sprintf("%s %s (%s)", e.Instance, e.Kind, e.Detail)
	case e.Instance != "":
		return e.Instance + " " + e.Kind
	case e.Detail != "":
		return e.Kind + ": " + e.Detail
	}
	return e.Kind
}

const (
	maxEvents = 200
	// goneFor is how long an instance that left stays on the screen.
	goneFor = time.Minute
	// states the view adds to the client's: not yet listed, and killed
	// by a signal while still listed (its lease not yet expired).
	stateStarting = "starting"
	stateKilled   = "killed"
	stateGone     = "gone"
)

// liveModel is the live view: one row per instance, the policy, the
// totals, and the latest events. It follows the terminal's size.
type liveModel struct {
	policy, etcd, logPath string
	started               time.Time
	now                   func() time.Time

	width, height int
	snap          clientSnapshot
	procs         map[string]procMsg
	goneAt        map[string]time.Time // instance -> when the view first showed it gone
	events        []eventMsg           // oldest first
	stopping      bool
	stopped       bool
	stop          func() // asks the stack to stop
}

func newLiveModel(policy, logPath string, stop func()) *liveModel {
	return &liveModel{policy: policy, logPath: logPath, started: time.Now(), now: time.Now,
		procs: map[string]procMsg{}, goneAt: map[string]time.Time{}, stop: stop}
}

// Init starts nothing: the stack sends what there is to show.
func (m *liveModel) Init() tea.Cmd { return nil }

// Update applies a message.
func (m *liveModel) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
	case tea.KeyMsg:
		if k := msg.String(); (k == "q" || k == "ctrl+c") && !m.stopping {
			m.stopping = true
			m.stop()
		}
	case clientSnapshot:
		m.snap = msg
		for _, e := range msg.Events {
			m.addEvent(eventMsg{At: e.At, Text: e.text()})
		}
	case eventMsg:
		m.addEvent(msg)
	case etcdMsg:
		m.etcd = string(msg)
	case procMsg:
		m.procs[msg.Name] = msg
	case stoppedMsg:
		m.stopped = true
		return m, tea.Quit
	}
	m.noteGone()
	return m, nil
}

// addEvent inserts e in time order: the client's events carry the time
// the client saw them, a little before its snapshot reaches the view.
func (m *liveModel) addEvent(e eventMsg) {
	i := len(m.events)
	for i > 0 && m.events[i-1].At.After(e.At) {
		i--
	}
	m.events = slices.Insert(m.events, i, e)
	if len(m.events) > maxEvents {
		m.events = m.events[len(m.events)-maxEvents:]
	}
}

// noteGone records when each instance was first shown gone, so that it
// leaves the screen goneFor later.
func (m *liveModel) noteGone() {
	for _, r := range m.rows(false) {
		if r.state == stateGone {
			if _, ok := m.goneAt[r.ID]; !ok {
				m.goneAt[r.ID] = m.now()
			}
		} else {
			delete(m.goneAt, r.ID)
		}
	}
}

// row is an instance as the view shows it.
type row struct {
	instanceFigures
	state string
}

// rows joins the client's figures with what the stack knows of its
// greeters, in name order; pruned drops those gone for goneFor.
func (m *liveModel) rows(pruned bool) []row {
	var rows []row
	seen := map[string]bool{}
	for _, in := range m.snap.Instances {
		seen[in.ID] = true
		r := row{instanceFigures: in, state: in.State}
		p, known := m.procs[in.ID]
		switch {
		case in.State == "": // the calls no instance answered
			if in.Calls == 0 {
				continue
			}
			r.state = "-"
		case known && p.State == procKilled && in.State != stateGone:
			r.state = stateKilled
		case known && p.State != procRunning && in.State != stateGone:
			r.state = procStopped // the client stopped first: its last snapshot is older
		}
		rows = append(rows, r)
	}
	for name, p := range m.procs {
		if seen[name] || !strings.HasPrefix(name, "greeter-") {
			continue
		}
		r := row{instanceFigures: instanceFigures{ID: name}, state: stateStarting}
		if p.State == procKilled {
			r.state = stateKilled
		} else if p.State != procRunning {
			r.state = stateGone
		}
		rows = append(rows, r)
	}
	if pruned {
		rows = slices.DeleteFunc(rows, func(r row) bool {
			at, ok := m.goneAt[r.ID]
			return r.state == stateGone && ok && m.now().Sub(at) > goneFor
		})
	}
	slices.SortFunc(rows, func(a, b row) int { return compareNames(a.ID, b.ID) })
	return rows
}

// compareNames orders "greeter-2" before "greeter-10", and names that do
// not end in a number (the row of calls no instance answered) last.
func compareNames(a, b string) int {
	na, aok := trailingNumber(a)
	nb, bok := trailingNumber(b)
	switch {
	case aok != bok:
		if aok {
			return -1
		}
		return 1
	case aok && strings.TrimRight(a, "0123456789") == strings.TrimRight(b, "0123456789"):
		return na - nb
	}
	return strings.Compare(a, b)
}

func trailingNumber(s string) (int, bool) {
	i := len(s)
	for i > 0 && s[i-1] >= '0' && s[i-1] <= '9' {
		i--
	}
	n, err := strconv.Atoi(s[i:])
	return n, err == nil
}

var (
	boldStyle  = lipgloss.NewStyle().Bold(true)
	faintStyle = lipgloss.NewStyle().Faint(true)
	barStyle   = lipgloss.NewStyle().Foreground(lipgloss.Color("6"))
	stateStyle = map[string]lipgloss.Style{
		"ready":       lipgloss.NewStyle().Foreground(lipgloss.Color("2")),
		"connecting":  lipgloss.NewStyle().Foreground(lipgloss.Color("3")),
		stateStarting: lipgloss.NewStyle().Foreground(lipgloss.Color("3")),
		"draining":    lipgloss.NewStyle().Foreground(lipgloss.Color("3")),
		"stalled":     lipgloss.NewStyle().Foreground(lipgloss.Color("1")).Bold(true),
		"ejected":     lipgloss.NewStyle().Foreground(lipgloss.Color("1")),
		"unreachable": lipgloss.NewStyle().Foreground(lipgloss.Color("1")),
		stateKilled:   lipgloss.NewStyle().Foreground(lipgloss.Color("1")).Bold(true),
		stateGone:     faintStyle,
		"-":           faintStyle,
	}
)

// View draws the screen; lines wider than the terminal are cut by the
// renderer, and the event list shrinks to fit its height.
func (m *liveModel) View() string {
	width := m.width
	if width <= 0 {
		width = 100 // until the first size message
	}
	rows := m.rows(true)
	var b strings.Builder
	etcd := m.etcd
	if etcd == "" {
		etcd = "starting"
	}
	up := m.now().Sub(m.started).Truncate(time.Second)
	fmt.Fprintln(&b, boldStyle.Render("rollcall local stack")+faintStyle.Render(
		fmt.Sprintf("  policy %s · etcd %s · up %s", m.policy, etcd, up)))
	fmt.Fprintf(&b, "%.1f calls/s · %d calls · %d errors · p50 %s · p99 %s\n\n",
		m.snap.PerSecond, m.snap.Calls, m.snap.Errors, ms(m.snap.P50Ms), ms(m.snap.P99Ms))

	nameWidth := len("instance")
	for _, r := range rows {
		nameWidth = max(nameWidth, len(r.ID))
	}
	// The bar takes what the other columns leave, up to 30 cells; the
	// address shows when the bar keeps 10 cells beside it.
	const fixed = 11 + 9 + 6 + 9 + 9 + 8 + 7 // state, calls/s, share %, p50, p99, errors, spaces
	const addrWidth = 2 + 21
	free := width - nameWidth - fixed
	showAddr := free-addrWidth >= 10
	if showAddr {
		free -= addrWidth
	}
	barWidth := min(max(free, 4), 30)
	header := fmt.Sprintf("%-*s %-11s %8s %-*s %5s %8s %8s %7s", nameWidth, "instance", "state", "calls/s", barWidth, "share", "",
		"p50", "p99", "errors")
	if showAddr {
		header += "  address"
	}
	// What does not fit the terminal's height goes: events first, then
	// the last rows.
	const frame = 3 + 1 + 2 // title and totals, table header, footer
	shownRows, shownEvents := len(rows), len(m.events)
	if m.height > 0 {
		shownRows = min(shownRows, max(m.height-frame, 1))
		if shownRows < len(rows) {
			shownRows-- // for the line that says how many are left out
		}
		shownEvents = min(shownEvents, max(m.height-frame-len(rows)-2, 0)) // 2: blank line, heading
	}
	fmt.Fprintln(&b, boldStyle.Render(header))
	for _, r := range rows[:max(shownRows, 0)] {
		state := fmt.Sprintf("%-11s", r.state)
		if st, ok := stateStyle[r.state]; ok {
			state = st.Render(state)
		}
		filled := int(r.Share*float64(barWidth) + 0.5)
		bar := barStyle.Render(strings.Repeat("█", filled)) + faintStyle.Render(strings.Repeat("·", barWidth-filled))
		line := fmt.Sprintf("%-*s %s %8.1f %s %4.0f%% %8s %8s %7d", nameWidth, r.ID, state, r.PerSecond, bar, 100*r.Share,
			ms(r.P50Ms), ms(r.P99Ms), r.Errors)
		if showAddr {
			line += "  " + r.Addr
		}
		fmt.Fprintln(&b, line)
	}
	if left := len(rows) - max(shownRows, 0); left > 0 {
		fmt.Fprintln(&b, faintStyle.Render(fmt.Sprintf("... %d more: a taller terminal shows them", left)))
	}

	footer := "q or Ctrl-C: stop the stack · go run mage.go demo:kill, demo:scale, demo:rolling act on it · logs: " + m.logPath
	switch {
	case m.stopped:
		footer = "stopped · logs: " + m.logPath
	case m.stopping:
		footer = "stopping: client, then greeters (deregister, drain), then etcd..."
	}
	if shownEvents > 0 {
		fmt.Fprintln(&b, "\n"+boldStyle.Render("events"))
		for _, e := range m.events[len(m.events)-shownEvents:] {
			fmt.Fprintf(&b, "%s  %s\n", faintStyle.Render(e.At.Format("15:04:05")), e.Text)
		}
	}
	fmt.Fprint(&b, "\n"+faintStyle.Render(footer))
	return b.String()
}

// ms formats a latency in milliseconds, "-" when there is none.
func ms(v float64) string {
	if v == 0 {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + "ms"
}
