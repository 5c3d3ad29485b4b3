package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
)

// rowStates reads the instance rows of a view: name -> state.
func rowStates(view string) (names []string, states map[string]string) {
	states = map[string]string{}
	for _, l := range strings.Split(view, "\n") {
		if f := strings.Fields(l); len(f) >= 8 && strings.HasPrefix(f[0], "greeter-") {
			names = append(names, f[0])
			states[f[0]] = f[1]
		}
	}
	return names, states
}

// The view joins what the client sees (its snapshot) with what the stack
// knows of its processes, lays itself out for the terminal's size, and
// stops the stack once however often q is pressed.
func TestLiveModel(t *testing.T) {
	stops := 0
	m := newLiveModel("round_robin", ".run/logs/up.log", func() { stops++ })
	now := time.Date(2026, 12, 3, 7, 0, 0, 0, time.UTC)
	m.now = func() time.Time { return now }
	m.started = now
	m.Update(tea.WindowSizeMsg{Width: 120, Height: 30})
	m.Update(etcdMsg("127.0.0.1:2379"))
	for _, p := range []procMsg{{"greeter-1", 11, procRunning}, {"greeter-2", 12, procRunning}, {"greeter-10", 20, procRunning},
		{"greeter-2", 12, procKilled}} {
		m.Update(p)
	}
	m.Update(eventMsg{At: now, Text: "greeter-2 (pid 12) was killed by SIGKILL"})
	m.Update(clientSnapshot{At: now, Calls: 30, PerSecond: 10, Instances: []instanceFigures{
		{ID: "greeter-1", Addr: "127.0.0.1:1", State: "ready", PerSecond: 10, Share: 1, P50Ms: 0.8, P99Ms: 2},
		{ID: "greeter-2", Addr: "127.0.0.1:2", State: "unreachable"},
		{ID: "greeter-3", State: "gone", Calls: 5},
		{ID: "(no instance)", Calls: 1, Errors: 1},
	}, Events: []clientEvent{{At: now.Add(-time.Second), Kind: "deregistered", Instance: "greeter-3", Detail: "127.0.0.1:3"}}})

	view := m.View()
	names, states := rowStates(view)
	if got, want := strings.Join(names, ","), "greeter-1,greeter-2,greeter-3,greeter-10"; got != want {
		t.Errorf("rows %s, want %s:\n%s", got, want, view)
	}
	for name, want := range map[string]string{"greeter-1": "ready", "greeter-2": "killed", "greeter-3": "gone", "greeter-10": "starting"} {
		if states[name] != want {
			t.Errorf("%s is %s, want %s:\n%s", name, states[name], want, view)
		}
	}
	for _, want := range []string{"policy round_robin", "etcd 127.0.0.1:2379", "(no instance)", "address",
		"06:59:59  greeter-3 deregistered (127.0.0.1:3)\n07:00:00  greeter-2 (pid 12) was killed by SIGKILL"} {
		if !strings.Contains(view, want) {
			t.Errorf("view lacks %q:\n%s", want, view)
		}
	}

	m.Update(tea.WindowSizeMsg{Width: 70, Height: 12})
	view = m.View()
	if strings.Contains(view, "address") {
		t.Errorf("a 70-column view has the address column:\n%s", view)
	}
	if n := strings.Count(view, "\n") + 1; n > 12 {
		t.Errorf("a 12-line terminal gets %d lines:\n%s", n, view)
	}

	now = now.Add(2 * goneFor)
	if _, states := rowStates(m.View()); states["greeter-3"] != "" {
		t.Errorf("greeter-3 still shown %v after it went", 2*goneFor)
	}

	for range 2 {
		m.Update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("q")})
	}
	m.Update(tea.KeyMsg{Type: tea.KeyCtrlC})
	if stops != 1 {
		t.Errorf("stop called %d times, want once", stops)
	}
	if _, cmd := m.Update(stoppedMsg{}); cmd == nil || fmt.Sprint(cmd()) != fmt.Sprint(tea.Quit()) {
		t.Error("the view does not quit once the stack stopped")
	}
}
