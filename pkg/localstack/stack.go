package localstack

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrRunning is returned by [New] when its PID file names running
// processes: a stack already runs there.
var ErrRunning = errors.New("a stack is already running")

// Config says where a [Stack] writes.
type Config struct {
	// LogDir holds the log files, NAME.log, of processes that write to
	// files. It is created if missing.
	LogDir string
	// Output receives each process's lines, prefixed "NAME      | ", and
	// the stack's own lines ([Stack.Say]). Nil: every process writes to
	// its log file, and the stack's lines are dropped.
	Output io.Writer
	// LogFiles sends every process's output to its log file instead of
	// Output.
	LogFiles bool
	// PIDFile, when set, lists "NAME PID" for each process running; [New]
	// refuses to start while a process it lists runs, and [Stack.Close]
	// removes it. A file left by an owner that could not remove it (killed
	// with SIGKILL) lists only processes gone: New removes it.
	PIDFile string
	// KillOnExit has every process killed when this one exits, however it
	// exits (Linux only): a process in its own group gets no Ctrl-C from the
	// terminal. Not for a stack that outlives its owner, as a detached one.
	KillOnExit bool
}

// Command is a process to start.
type Command struct {
	Name string // names its log lines and log file; unique within a stack
	Path string // the binary
	Args []string
	// Env is the process's whole environment; nil inherits this one.
	Env []string
	// LogFile sends its output to its log file even when the stack writes
	// to Output (etcd's own log is for debugging etcd, not for a demo).
	LogFile bool
	// Metrics is the host:port of its Prometheus /metrics, if it serves one.
	Metrics string
	// Tap, when set, sees each line of output that goes to Output before
	// it is written or awaited; a line it returns false for is dropped, so
	// that a machine-readable feed need not reach a reader's screen.
	Tap func(text string) (keep bool)
}

// Stack owns the processes it started, stops them by PID, and waits for
// the goroutines that copy their output.
type Stack struct {
	cfg Config
	wg  sync.WaitGroup

	outMu sync.Mutex // one line at a time on cfg.Output
	pidMu sync.Mutex // one writer of cfg.PIDFile at a time

	mu       sync.Mutex
	procs    []*Process
	watchers []*lineWatcher
}

// Process is one process of a stack.
type Process struct {
	Name    string
	Metrics string // host:port of its /metrics, from its Command
	cmd     *exec.Cmd
	done    chan struct{} // closed once it has exited and its output is drained
	err     error         // how it exited; set before done is closed
}

type lineWatcher struct {
	name, text string
	ch         chan Line
}

// Line is a line a process wrote, and when the stack read it.
type Line struct {
	At   time.Time
	Text string
}

// New returns an empty stack; it fails with [ErrRunning] when cfg.PIDFile
// lists a process that still runs, and removes a PID file whose processes
// are all gone.
func New(cfg Config) (*Stack, error) {
	if cfg.PIDFile != "" {
		if err := checkPIDFile(cfg.PIDFile); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(cfg.LogDir, 0o755); err != nil {
		return nil, fmt.Errorf("log directory: %w", err)
	}
	return &Stack{cfg: cfg}, nil
}

// Start starts c in its own process group.
func (s *Stack) Start(c Command) (*Process, error) {
	cmd := exec.Command(c.Path, c.Args...)
	cmd.Env = c.Env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if s.cfg.KillOnExit {
		killWithParent(cmd.SysProcAttr)
	}
	var out io.ReadCloser
	if s.cfg.LogFiles || c.LogFile || s.cfg.Output == nil {
		f, err := os.Create(filepath.Join(s.cfg.LogDir, c.Name+".log"))
		if err != nil {
			return nil, fmt.Errorf("log file of %s: %w", c.Name, err)
		}
		defer f.Close() // the child has its own copy
		cmd.Stdout, cmd.Stderr = f, f
	} else {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, fmt.Errorf("output of %s: %w", c.Name, err)
		}
		defer w.Close() // the child has its own copy; EOF comes when it exits
		cmd.Stdout, cmd.Stderr = w, w
		out = r
	}
	if err := cmd.Start(); err != nil {
		if out != nil {
			out.Close()
		}
		return nil, fmt.Errorf("start %s: %w", c.Name, err)
	}
	p := &Process{Name: c.Name, Metrics: c.Metrics, cmd: cmd, done: make(chan struct{})}
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	s.wg.Go(func() {
		if out != nil {
			s.copyLines(c.Name, out, c.Tap)
		}
		p.err = cmd.Wait()
		close(p.done)
		s.writePIDs() // best effort: the file lists what runs; Close removes it
	})
	if err := s.writePIDs(); err != nil {
		return p, err
	}
	return p, nil
}

func (s *Stack) copyLines(name string, r io.ReadCloser, tap func(string) bool) {
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if tap != nil && !tap(line) {
			continue
		}
		s.outMu.Lock()
		fmt.Fprintf(s.cfg.Output, "%-10s| %s\n", name, line)
		s.outMu.Unlock()
		s.notify(name, line)
	}
	io.Copy(io.Discard, r) // a line too long for the scanner: keep the child from blocking
}

func (s *Stack) notify(name, line string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	kept := s.watchers[:0]
	for _, w := range s.watchers {
		if w.name == name && strings.Contains(line, w.text) {
			w.ch <- Line{At: time.Now(), Text: line}
			continue
		}
		kept = append(kept, w)
	}
	s.watchers = kept
}

// AwaitLine returns a channel that receives the first line from the
// process called name that contains text, written after this call. Only
// output that goes to Output is seen.
func (s *Stack) AwaitLine(name, text string) <-chan Line {
	w := &lineWatcher{name: name, text: text, ch: make(chan Line, 1)}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.watchers = append(s.watchers, w)
	return w.ch
}

// Say writes a line of the stack's owner to Output, set apart from the
// processes' lines by "==> ".
func (s *Stack) Say(format string, args ...any) {
	if s.cfg.Output == nil {
		return
	}
	s.outMu.Lock()
	defer s.outMu.Unlock()
	fmt.Fprintf(s.cfg.Output, "==> "+format+"\n", args...)
}

// Processes lists the processes started, in order, running or not.
func (s *Stack) Processes() []*Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Process(nil), s.procs...)
}

// Process returns the last process started as name, or nil.
func (s *Stack) Process(name string) *Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.procs) - 1; i >= 0; i-- {
		if s.procs[i].Name == name {
			return s.procs[i]
		}
	}
	return nil
}

func (s *Stack) writePIDs() error {
	if s.cfg.PIDFile == "" {
		return nil
	}
	s.pidMu.Lock()
	defer s.pidMu.Unlock()
	var b strings.Builder
	for _, p := range s.Processes() {
		if p.Running() {
			fmt.Fprintf(&b, "%s %d\n", p.Name, p.PID())
		}
	}
	// A new file renamed over the old: a reader never sees it half written.
	tmp := s.cfg.PIDFile + ".new"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("PID file: %w", err)
	}
	if err := os.Rename(tmp, s.cfg.PIDFile); err != nil {
		return fmt.Errorf("PID file: %w", err)
	}
	return nil
}

// Stop sends sig to each process's group and waits for them all to exit,
// killing those still running after timeout.
func (s *Stack) Stop(sig syscall.Signal, timeout time.Duration, procs ...*Process) {
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() { p.Stop(sig, timeout) })
	}
	wg.Wait()
}

// Close kills every process still running, waits for them and for the
// goroutines copying their output, and removes the PID file.
func (s *Stack) Close() error {
	s.Stop(syscall.SIGKILL, time.Second, s.Processes()...)
	s.wg.Wait()
	if s.cfg.PIDFile != "" {
		if err := os.Remove(s.cfg.PIDFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("PID file: %w", err)
		}
	}
	return nil
}

// PID is the process's ID, which is also its process group's.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Done is closed once the process has exited and its output is drained.
func (p *Process) Done() <-chan struct{} { return p.done }

// Wait waits for the process to exit and returns how it did: nil for
// status 0, else an *exec.ExitError.
func (p *Process) Wait() error {
	<-p.done
	return p.err
}

// ExitSignal returns the signal that ended the process; ok is false while
// it runs, and when it exited by itself (with any status).
func (p *Process) ExitSignal() (sig syscall.Signal, ok bool) {
	if p.Running() {
		return 0, false
	}
	var exit *exec.ExitError
	if !errors.As(p.err, &exit) {
		return 0, false
	}
	status, isWait := exit.Sys().(syscall.WaitStatus)
	if !isWait || !status.Signaled() {
		return 0, false
	}
	return status.Signal(), true
}

// Running reports whether the process has not yet exited.
func (p *Process) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Signal sends sig to the process's group without waiting: SIGSTOP,
// SIGCONT, SIGUSR1...
func (p *Process) Signal(sig syscall.Signal) error {
	if err := syscall.Kill(-p.PID(), sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %v to %s: %w", sig, p.Name, err)
	}
	return nil
}

// Stop sends sig to the process's group and waits for it to exit, killing
// the group after timeout. It returns at once for a process already gone.
func (p *Process) Stop(sig syscall.Signal, timeout time.Duration) {
	if !p.Running() {
		return
	}
	p.Signal(sig)
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.done:
	case <-timer.C:
		p.Signal(syscall.SIGKILL)
		<-p.done
	}
}
