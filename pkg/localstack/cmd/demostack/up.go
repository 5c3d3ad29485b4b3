package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/rollcall/rollcall/pkg/localstack"
)

// Why a stack stops, besides a signal.
var (
	errKeyStop      = errors.New("stopped from the keyboard")
	errDown         = errors.New("stopped by `demostack down`")
	errOutputClosed = errors.New("standard output closed")
	errClientExited = errors.New("the client exited")
	errViewEnded    = errors.New("the live view ended")
)

// logFile is where a stack shown in the live view, or running in the
// background, writes every process's lines.
var logFile = filepath.Join(runDir, "logs", "up.log")

// up runs the stack until Ctrl-C (q too in the live view), SIGINT,
// SIGTERM or SIGHUP, `demostack down`, its parent's exit, its output
// closing or the client's exit. On a terminal it shows the live view;
// elsewhere, every process's lines. Detached (DETACH=1), a supervisor of
// its own runs it in the background.
func up(ctx context.Context) error {
	n, err := envInt("GREETERS", 3)
	if err != nil {
		return err
	}
	if os.Getenv("DETACH") != "" {
		return detach(ctx)
	}
	if err := stopWithParent(); err != nil {
		return err
	}
	ln, err := listenControl()
	if err != nil {
		return err
	}
	if liveTerminal() {
		return upLive(ctx, n, ln)
	}
	ctx, stop, out, restore, err := linesOutput(ctx)
	if err != nil {
		ln.Close()
		return err
	}
	defer restore()
	return supervise(ctx, stop, n, ln, stackConfig{out: out}, nil)
}

// liveTerminal reports whether the live view can run: standard input and
// output are the terminal, and this process is in its foreground.
func liveTerminal() bool {
	return isTerminal(os.Stdout) && inForeground(os.Stdin)
}

// linesOutput prepares standard output for a stack's lines: the stack
// stops when the output closes, and when Ctrl-C or q is typed at the
// terminal. restore gives the terminal back.
func linesOutput(parent context.Context) (ctx context.Context, stop context.CancelCauseFunc, out io.Writer, restore func(), err error) {
	ctx, stop = context.WithCancelCause(parent)
	restore, err = keysFromTerminal(os.Stdin, func() { stop(errKeyStop) })
	if err != nil {
		stop(err)
		return nil, nil, nil, nil, err
	}
	return ctx, stop, &outputWriter{w: os.Stdout, closed: func() { stop(errOutputClosed) }}, restore, nil
}

// outputWriter writes a stack's lines. When a write fails (the reader of
// a pipe is gone), it calls closed once and drops what follows, so that
// the stack still stops every process in order.
type outputWriter struct {
	w      io.Writer
	closed func()
	mu     sync.Mutex
	failed bool
}

func (o *outputWriter) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.failed {
		return len(p), nil
	}
	if _, err := o.w.Write(p); err != nil {
		o.failed = true
		o.closed()
	}
	return len(p), nil
}

// upLive runs the stack under the live view, its processes' lines going
// to logFile.
func upLive(ctx context.Context, n int, ln net.Listener) error {
	log, err := createLog()
	if err != nil {
		ln.Close()
		return err
	}
	defer log.Close()
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	model := newLiveModel(clientPolicy(), logFile, func() { stop(errKeyStop) })
	// Bubble Tea's own signal handling is off: the stack's context has
	// the signals, and stopping takes longer than a view may wait.
	p := tea.NewProgram(model, tea.WithAltScreen(), tea.WithoutSignalHandler())
	var supervised error
	var wg sync.WaitGroup
	wg.Go(func() {
		supervised = supervise(ctx, stop, n, ln, stackConfig{out: log, live: p}, nil)
		p.Send(stoppedMsg{})
	})
	final, viewErr := p.Run()
	stop(errViewEnded) // the view failed (its terminal gone): stop the stack
	wg.Wait()
	if viewErr == nil {
		fmt.Println(final.View()) // the last screen stays, out of the alternate screen
	}
	return errors.Join(supervised, viewErr)
}

// createLog creates logFile, empty.
func createLog() (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(logFile), 0o755); err != nil {
		return nil, fmt.Errorf("log directory: %w", err)
	}
	f, err := os.Create(logFile)
	if err != nil {
		return nil, fmt.Errorf("log file: %w", err)
	}
	return f, nil
}

// supervise brings the stack up, takes requests on ln, and when ctx ends
// or the client exits, stops taking them and stops the stack in order.
// ready, if set, is called once the stack runs.
func supervise(ctx context.Context, stop context.CancelCauseFunc, n int, ln net.Listener, cfg stackConfig, ready func()) error {
	s, err := bringUp(ctx, n, cfg)
	if err != nil {
		ln.Close()
		return err
	}
	ctl := serveControl(ctx, s, ln, func() { stop(errDown) })
	var args []string
	if cfg.live != nil {
		args = []string{"-rate", "10"} // enough calls for the bars and percentiles of a few seconds
	}
	client, err := s.startClient(args...)
	if err == nil {
		s.Say("%s", s.metricsSummary())
		s.Say("demos act on this stack: go run mage.go demo:kill, demo:scale or demo:rolling in another terminal")
		if ready != nil {
			ready()
		}
		select {
		case <-ctx.Done():
		case <-client.Done():
			stop(errClientExited)
		}
		s.Say("stopping (%v): client, then greeters (deregister, drain), then etcd", context.Cause(ctx))
	}
	stop(nil) // ends the requests in progress
	ctl.close()
	s.stopAll()
	s.Say("every process stopped")
	ctl.finish()
	return err
}

// detach starts the stack's supervisor in the background, in a session of
// its own, and returns once the stack runs.
func detach(ctx context.Context) error {
	if ran, _ := request(ctx, "ping", io.Discard); ran {
		return errRunning
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	log, err := createLog()
	if err != nil {
		return err
	}
	defer log.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	cmd := exec.Command(self, "supervise")
	cmd.Stdout, cmd.Stderr = log, log
	cmd.ExtraFiles = []*os.File{w} // fd 3: "ready" once the stack runs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	w.Close()
	if err != nil {
		return fmt.Errorf("start the background supervisor: %w", err)
	}
	report, _ := bufio.NewReader(r).ReadString('\n') // or EOF: the supervisor exited
	if report != "ready\n" {
		cmd.Wait()
		return fmt.Errorf("the background stack did not start: see %s", logFile)
	}
	fmt.Printf("running in the background (supervisor pid %d); logs in %s; the demos act on it; stop with: go run mage.go down\n",
		cmd.Process.Pid, logFile)
	return nil
}

// superviseDetached is the background supervisor that detach starts: its
// output is the log file, and fd 3 gets "ready" once the stack runs.
func superviseDetached(ctx context.Context) error {
	syscall.CloseOnExec(3) // the stack's processes must not hold it open
	ready := os.NewFile(3, "ready")
	defer ready.Close()
	n, err := envInt("GREETERS", 3)
	if err != nil {
		return err
	}
	ln, err := listenControl()
	if err != nil {
		return err
	}
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	return supervise(ctx, stop, n, ln, stackConfig{out: os.Stdout}, func() {
		fmt.Fprintln(ready, "ready")
		ready.Close()
	})
}

// down stops a running stack through its supervisor; with none, it stops
// what the PID file lists.
func down(ctx context.Context) error {
	if ran, err := request(ctx, "down", os.Stdout); ran {
		return err
	}
	pids := filepath.Join(runDir, "pids")
	stopped := 0
	err := localstack.StopPIDFile(pids, 15*time.Second, func(name string, pid int) {
		fmt.Printf("stopped %s (pid %d)\n", name, pid)
		stopped++
	})
	switch {
	case errors.Is(err, os.ErrNotExist):
		fmt.Println("nothing to stop: no stack running")
		return nil
	case err == nil && stopped == 0:
		fmt.Println("nothing to stop: the processes", pids, "listed were gone; removed it")
	}
	return err
}
