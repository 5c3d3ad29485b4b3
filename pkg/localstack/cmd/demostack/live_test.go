//go:build linux

package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
)

// instanceRow finds the row of instance on the screen: its fields, name
// first, or nil.
func instanceRow(lines []string, instance string) []string {
	for _, l := range lines {
		if f := strings.Fields(l); len(f) >= 8 && f[0] == instance {
			return f
		}
	}
	return nil
}

// takingCalls reports whether the row says ready with calls/s above 0.
func takingCalls(row []string) bool {
	if len(row) < 3 || row[1] != "ready" {
		return false
	}
	rate, err := strconv.ParseFloat(row[2], 64)
	return err == nil && rate > 0
}

// The live view, on a terminal, redraws in place: after `demostack kill`
// on the running stack it shows greeter-2 killed (or gone, once its lease
// expired), the kill among its events, and the other instances still
// taking calls; it follows a resize, and q stops the stack.
func TestLiveViewShowsAKillOnTheRunningStack(t *testing.T) {
	root := newRoot(t)
	cmd := exec.Command(filepath.Join(root, "bin", "demostack"), "up")
	cmd.Dir, cmd.Env = root, cleanEnv("TERM=xterm-256color")
	const rows, cols = 40, 120
	ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: rows, Cols: cols})
	if err != nil {
		t.Fatal(err)
	}
	scr := newScreen(rows, cols)
	scr.reply = ptmx
	exited, exitErr := onTerminal(t, cmd, ptmx, scr)

	scr.await(t, 60*time.Second, "three greeters taking calls", func(lines []string) bool {
		return takingCalls(instanceRow(lines, "greeter-1")) && takingCalls(instanceRow(lines, "greeter-2")) &&
			takingCalls(instanceRow(lines, "greeter-3"))
	})
	pids := mustPIDs(t, root)
	if out, err := runDemostack(root, "kill"); err != nil {
		t.Fatalf("demostack kill: %v\n%s", err, out)
	}
	killed := fmt.Sprintf("greeter-2 (pid %d) was killed by SIGKILL", pids["greeter-2"])
	lines := scr.await(t, 30*time.Second, "greeter-2 killed and the others taking calls", func(lines []string) bool {
		g2 := instanceRow(lines, "greeter-2")
		return g2 != nil && (g2[1] == "killed" || g2[1] == "gone") &&
			takingCalls(instanceRow(lines, "greeter-1")) && takingCalls(instanceRow(lines, "greeter-3")) &&
			slices.ContainsFunc(lines, func(l string) bool { return strings.HasSuffix(l, killed) })
	})
	t.Logf("the screen after demostack kill:\n%s", strings.TrimRight(strings.Join(lines, "\n"), "\n "))
	if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, "rollcall local stack  policy round_robin") }) {
		t.Errorf("the screen does not name the policy:\n%s", scr)
	}

	// A narrower terminal: the view is laid out again to fit.
	barWidth := func(lines []string) int {
		row := instanceRow(lines, "greeter-1")
		if row == nil {
			return -1
		}
		return len([]rune(row[3]))
	}
	wide := barWidth(lines)
	scr.resize(rows, 80)
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: rows, Cols: 80}); err != nil {
		t.Fatal(err)
	}
	scr.await(t, 10*time.Second, "the table laid out for 80 columns", func(lines []string) bool {
		w := barWidth(lines)
		return w > 0 && w < wide && !strings.Contains(strings.Join(lines, "\n"), "address")
	})

	if _, err := ptmx.Write([]byte("q")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if *exitErr != nil {
			t.Errorf("up exited with %v after q, want status 0", *exitErr)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("up still runs a minute after q; the screen shows:\n%s", scr)
	}
	assertStopped(t, root, pids)
}

// With its output piped (`up | tee up.log`) and the terminal as its input,
// up reads Ctrl-C as a key: no SIGINT reaches the processes that share the
// terminal (go run would exit 1, tee would die before the stop is shown),
// and the stack stops in order.
func TestCtrlCAtTheTerminalStopsAPipedUp(t *testing.T) {
	root := newRoot(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(root, "bin", "demostack"), "up")
	cmd.Dir, cmd.Env, cmd.Stdout = root, cleanEnv("TERM=xterm-256color"), w
	ptmx, err := pty.Start(cmd) // the terminal: stdin and stderr
	w.Close()
	if err != nil {
		r.Close()
		t.Fatal(err)
	}
	out := newLineLog(r)
	t.Cleanup(func() { // after onTerminal's: the process has exited
		r.Close()
		<-out.done
	})
	exited, exitErr := onTerminal(t, cmd, ptmx, io.Discard)
	out.await(t, 0, "client    | call 2:", 60*time.Second)
	pids := mustPIDs(t, root)
	if _, err := ptmx.Write([]byte{3}); err != nil { // Ctrl-C
		t.Fatal(err)
	}
	out.await(t, 0, "==> stopping (stopped from the keyboard)", 10*time.Second)
	out.await(t, 0, "==> every process stopped", 60*time.Second)
	<-exited
	if *exitErr != nil {
		t.Errorf("up exited with %v after Ctrl-C, want status 0", *exitErr)
	}
	assertStopped(t, root, pids)
}

// onTerminal copies what cmd, started on the terminal ptmx, writes there
// to sink, and waits for it to exit: exited is closed then, and *exitErr
// is its end. The test's cleanup kills it if it still runs, and waits
// for both.
func onTerminal(t *testing.T, cmd *exec.Cmd, ptmx *os.File, sink io.Writer) (exited <-chan struct{}, exitErr *error) {
	copied := make(chan struct{})
	go func() { // ends when the terminal closes: the process exited, or the cleanup
		io.Copy(sink, ptmx)
		close(copied)
	}()
	done := make(chan struct{})
	exitErr = new(error)
	go func() { // ends when the process exits, which the cleanup makes sure of
		*exitErr = cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		ptmx.Close()
		<-copied
	})
	return done, exitErr
}
