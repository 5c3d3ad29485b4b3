//go:build linux

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/rollcall/rollcall/pkg/etcdtest"
	"github.com/rollcall/rollcall/pkg/localstack"
)

// binDir holds the binaries the tests run: demostack built from this
// package, the greeter and the client from their modules, etcd from the
// repository's bin (built there when missing, as `mage up` does).
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "demostack-test-")
	if err == nil {
		err = buildBinaries(dir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demostack tests:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	binDir = dir
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		os.RemoveAll(dir)
		os.Exit(code)
	}))
}

func buildBinaries(dir string) error {
	root, err := filepath.Abs("../../../..")
	if err != nil {
		return err
	}
	etcd, err := localstack.EtcdBinary(".")
	if err != nil {
		return err
	}
	if err := os.Symlink(etcd, filepath.Join(dir, "etcd")); err != nil {
		return err
	}
	for _, b := range [][3]string{ // module directory, binary, package
		{".", "demostack", "."},
		{filepath.Join(root, "services", "greeter"), "greeter", "./cmd/greeter"},
		{filepath.Join(root, "services", "client"), "client", "./cmd/client"},
	} {
		if err := localstack.Build(b[0], filepath.Join(dir, b[1]), b[2]); err != nil {
			return err
		}
	}
	return nil
}

// newRoot returns a directory laid out as the repository's root for
// demostack: bin/ with its binaries, and room for .run. Every process the
// stack there lists in its PID file is killed at the end of the test.
func newRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	if err := os.Symlink(binDir, filepath.Join(root, "bin")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		pids, _ := readPIDs(root)
		for name, pid := range pids {
			if syscall.Kill(-pid, syscall.SIGKILL) == nil {
				t.Errorf("%s (pid %d) was still running at the end of the test", name, pid)
			}
		}
	})
	return root
}

// cleanEnv is this environment without the settings demostack reads.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "DETACH", "ETCD_ENDPOINTS", "GREETERS", "TLS", "CLIENT_POLICY":
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// readPIDs reads the stack's PID file under root: name -> PID.
func readPIDs(root string) (map[string]int, error) {
	data, err := os.ReadFile(filepath.Join(root, ".run", "pids"))
	if err != nil {
		return nil, err
	}
	pids := map[string]int{}
	for line := range strings.Lines(string(data)) {
		name, pid, ok := strings.Cut(strings.TrimSpace(line), " ")
		n, err := strconv.Atoi(pid)
		if !ok || err != nil {
			return nil, fmt.Errorf("bad PID file line %q", line)
		}
		pids[name] = n
	}
	return pids, nil
}

// awaitExit waits for pid to exit, through a pidfd: the process is not
// this one's child. It reports whether it exited within timeout.
func awaitExit(pid int, timeout time.Duration) bool {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return errors.Is(err, unix.ESRCH)
	}
	defer unix.Close(fd)
	deadline := time.Now().Add(timeout)
	for {
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(max(time.Until(deadline), 0)/time.Millisecond))
		if err == unix.EINTR {
			continue
		}
		return err == nil && n > 0
	}
}

// lineLog collects the lines of a reader, for tests to await.
type lineLog struct {
	mu      sync.Mutex
	lines   []string
	changed chan struct{} // closed and replaced at each line, and at EOF
	done    chan struct{} // closed at EOF
}

func newLineLog(r io.Reader) *lineLog {
	l := &lineLog{changed: make(chan struct{}), done: make(chan struct{})}
	go func() { // ends at EOF: when every writer has closed, or the test closed r
		defer close(l.done)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			l.mu.Lock()
			l.lines = append(l.lines, sc.Text())
			close(l.changed)
			l.changed = make(chan struct{})
			l.mu.Unlock()
		}
	}()
	return l
}

// await waits for a line, written after the first from lines, that
// contains text; it returns the line's index and the line.
func (l *lineLog) await(t *testing.T, from int, text string, timeout time.Duration) (int, string) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		l.mu.Lock()
		for i := from; i < len(l.lines); i++ {
			if line := l.lines[i]; strings.Contains(line, text) {
				l.mu.Unlock()
				return i, line
			}
		}
		changed := l.changed
		l.mu.Unlock()
		select {
		case <-changed:
		case <-l.done:
			select {
			case <-changed:
				continue // lines came with the EOF
			default:
			}
			t.Fatalf("output ended without a line containing %q:\n%s", text, l.String())
		case <-deadline:
			t.Fatalf("no line containing %q within %v:\n%s", text, timeout, l.String())
		}
	}
}

func (l *lineLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// upProcess is `demostack up` with its output on a pipe.
type upProcess struct {
	cmd    *exec.Cmd
	out    *lineLog
	reader *os.File // the pipe's read end, which the test may close
	exited chan struct{}
	err    error
}

// startUp starts `demostack up` in root, with env added to its
// environment, and returns once the client has made calls.
func startUp(t *testing.T, root string, env ...string) *upProcess {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(root, "bin", "demostack"), "up")
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = root, cleanEnv(env...), w, w
	// Its own group: a signal the test sends reaches it alone.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		t.Fatal(err)
	}
	u := &upProcess{cmd: cmd, out: newLineLog(r), reader: r, exited: make(chan struct{})}
	go func() { // ends when the process exits, which the cleanup makes sure of
		u.err = cmd.Wait()
		close(u.exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-u.exited
		r.Close()
		<-u.out.done
	})
	u.out.await(t, 0, "client    | call 2:", 60*time.Second)
	return u
}

// wait waits for the process to exit and returns its error.
func (u *upProcess) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case <-u.exited:
		return u.err
	case <-time.After(timeout):
		t.Fatalf("demostack up still runs %v later; output:\n%s", timeout, u.out)
		return nil
	}
}

// assertStopped checks that every process in pids is gone, that no
// process runs in root (every process of a stack runs there), and that
// the stack removed its PID file and control socket.
func assertStopped(t *testing.T, root string, pids map[string]int) {
	t.Helper()
	for name, pid := range pids {
		if !awaitExit(pid, 30*time.Second) {
			t.Errorf("%s (pid %d) still runs", name, pid)
		}
	}
	// One may be finishing its exit (the supervisor, after its last
	// answer to down): wait for each.
	var left []string
	for _, p := range processesIn(root) {
		if !awaitExit(p.pid, 30*time.Second) {
			left = append(left, fmt.Sprintf("%d %s", p.pid, p.cmdline))
		}
	}
	if len(left) > 0 {
		t.Errorf("processes still running in %s:\n%s", root, strings.Join(left, "\n"))
	}
	for _, f := range []string{"pids", "control.sock"} {
		if _, err := os.Stat(filepath.Join(root, ".run", f)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf(".run/%s after the stack stopped: %v, want it removed", f, err)
		}
	}
}

type process struct {
	pid     int
	cmdline string
}

// processesIn lists the running processes whose working directory is
// dir.
func processesIn(dir string) []process {
	entries, _ := os.ReadDir("/proc")
	var found []process
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); err != nil || cwd != dir {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		found = append(found, process{pid, strings.ReplaceAll(string(cmdline), "\x00", " ")})
	}
	return found
}

func mustPIDs(t *testing.T, root string) map[string]int {
	t.Helper()
	pids, err := readPIDs(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"etcd", "greeter-1", "greeter-2", "greeter-3", "client"} {
		if pids[name] == 0 {
			t.Fatalf("PID file lists no %s: %v", name, pids)
		}
	}
	return pids
}

// Whatever ends `up`, no process of its stack is left.
func TestUpLeavesNoProcessWhateverEndsIt(t *testing.T) {
	for _, tt := range []struct {
		name string
		end  func(t *testing.T, u *upProcess)
	}{
		{"SIGINT", func(t *testing.T, u *upProcess) { u.cmd.Process.Signal(syscall.SIGINT) }},
		{"SIGTERM", func(t *testing.T, u *upProcess) { u.cmd.Process.Signal(syscall.SIGTERM) }},
		{"SIGHUP", func(t *testing.T, u *upProcess) { u.cmd.Process.Signal(syscall.SIGHUP) }},
		{"its output pipe closed", func(t *testing.T, u *upProcess) { u.reader.Close() }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			root := newRoot(t)
			u := startUp(t, root)
			pids := mustPIDs(t, root)
			tt.end(t, u)
			if err := u.wait(t, 60*time.Second); err != nil {
				t.Errorf("up exited with %v, want status 0; output:\n%s", err, u.out)
			}
			assertStopped(t, root, pids)
		})
	}
}

// SIGKILL leaves the stack no time to stop anything: the kernel kills its
// processes (parent-death signal), and the next up finds the PID file
// stale and starts.
func TestUpKilledLeavesNoProcessAndTheNextUpStarts(t *testing.T) {
	root := newRoot(t)
	u := startUp(t, root)
	pids := mustPIDs(t, root)
	u.cmd.Process.Kill()
	u.wait(t, 10*time.Second)
	for name, pid := range pids {
		if !awaitExit(pid, 30*time.Second) {
			t.Errorf("%s (pid %d) still runs after demostack was killed", name, pid)
		}
	}
	next := startUp(t, root)
	pids = mustPIDs(t, root)
	next.cmd.Process.Signal(syscall.SIGINT)
	if err := next.wait(t, 60*time.Second); err != nil {
		t.Errorf("the next up exited with %v; output:\n%s", err, next.out)
	}
	assertStopped(t, root, pids)
}

// When the parent of up dies (mage killed), up stops its stack in order.
func TestUpStopsWhenItsParentIsKilled(t *testing.T) {
	root := newRoot(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	// The shell prints up's PID, then waits for it: it stays up's parent.
	shell := exec.Command("/bin/sh", "-c", "bin/demostack up & echo pid $!; wait")
	shell.Dir, shell.Env, shell.Stdout, shell.Stderr = root, cleanEnv(), w, w
	shell.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = shell.Start()
	w.Close()
	if err != nil {
		r.Close()
		t.Fatal(err)
	}
	out := newLineLog(r)
	var upPID int
	t.Cleanup(func() {
		if upPID != 0 {
			syscall.Kill(upPID, syscall.SIGKILL)
		}
		shell.Process.Kill()
		shell.Wait()
		r.Close()
		<-out.done
	})
	_, line := out.await(t, 0, "pid ", 10*time.Second)
	if upPID, err = strconv.Atoi(strings.TrimPrefix(line, "pid ")); err != nil {
		t.Fatal(err)
	}
	out.await(t, 0, "client    | call 2:", 60*time.Second)
	pids := mustPIDs(t, root)
	shell.Process.Kill()
	shell.Wait()
	out.await(t, 0, "==> stopping (terminated signal received)", 10*time.Second)
	if !awaitExit(upPID, 60*time.Second) {
		t.Fatalf("up (pid %d) still runs a minute after its parent was killed", upPID)
	}
	assertStopped(t, root, pids)
}

// With up running, the demos act on its stack: the up's own output shows
// their effect, and its greeters are the ones killed, added, replaced.
func TestDemosActOnTheRunningStack(t *testing.T) {
	root := newRoot(t)
	u := startUp(t, root)
	run := func(command string) string {
		t.Helper()
		cmd := exec.Command(filepath.Join(root, "bin", "demostack"), command)
		cmd.Dir, cmd.Env = root, cleanEnv()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("demostack %s: %v\n%s", command, err, out)
		}
		if strings.Contains(string(out), "starting one") {
			t.Fatalf("demostack %s started a stack of its own:\n%s", command, out)
		}
		return string(out)
	}

	before := mustPIDs(t, root)
	if out := run("kill"); !strings.Contains(out, "left etcd") {
		t.Errorf("demostack kill reported:\n%s", out)
	}
	i, _ := u.out.await(t, 0, fmt.Sprintf("==> greeter-2 (pid %d) was killed by SIGKILL", before["greeter-2"]), 10*time.Second)
	// Calls go on, to the others only.
	i, _ = u.out.await(t, i, "from greeter-1 (", 10*time.Second)
	u.out.await(t, i, "from greeter-3 (", 10*time.Second)
	if !awaitExit(before["greeter-2"], time.Second) {
		t.Error("greeter-2 still runs after the kill demo")
	}

	if out := run("scale"); !strings.Contains(out, "first call answered by greeter-4") {
		t.Errorf("demostack scale reported:\n%s", out)
	}
	i, _ = u.out.await(t, 0, "from greeter-4 (", 10*time.Second)

	run("rolling") // greeter-1, -3 and -4 replaced by -5, -6, -7
	after := mustRunning(t, root, "greeter-5", "greeter-6", "greeter-7")
	for _, old := range []string{"greeter-1", "greeter-3", "greeter-4"} {
		if _, ok := after[old]; ok {
			t.Errorf("%s still listed after the rolling replacement: %v", old, after)
		}
	}
	u.out.await(t, i, "from greeter-7 (", 10*time.Second)

	if out, err := runDemostack(root, "down"); err != nil {
		t.Fatalf("demostack down: %v\n%s", err, out)
	}
	if err := u.wait(t, 60*time.Second); err != nil {
		t.Errorf("up exited with %v after down", err)
	}
	for _, p := range after {
		if !awaitExit(p, 30*time.Second) {
			t.Errorf("pid %d still runs after down", p)
		}
	}
	assertStopped(t, root, before)
}

func runDemostack(root, command string, env ...string) (string, error) {
	cmd := exec.Command(filepath.Join(root, "bin", "demostack"), command)
	cmd.Dir, cmd.Env = root, cleanEnv(env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// mustRunning reads the PID file and checks that it lists names.
func mustRunning(t *testing.T, root string, names ...string) map[string]int {
	t.Helper()
	pids, err := readPIDs(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if pids[n] == 0 {
			t.Fatalf("PID file lists no %s: %v", n, pids)
		}
	}
	return pids
}

// With no stack running, a demo starts one of its own, and leaves
// nothing behind.
func TestDemoWithoutAStackStartsItsOwn(t *testing.T) {
	root := newRoot(t)
	out, err := runDemostack(root, "scale")
	if err != nil {
		t.Fatalf("demostack scale: %v\n%s", err, out)
	}
	for _, want := range []string{"no stack running: starting one", "started greeter-4", "first call answered by greeter-4",
		"client    | summary:"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	assertStopped(t, root, nil)
}

// up's settings, as README gives them: GREETERS, TLS=1, ETCD_ENDPOINTS.
func TestUpSettings(t *testing.T) {
	external := etcdtest.Start(t)
	for _, tt := range []struct {
		name   string
		env    []string
		says   string   // a line of the stack's own
		procs  []string // what the PID file lists
		absent []string // what it must not list
	}{
		{"GREETERS=2", []string{"GREETERS=2"}, "greeter-2", []string{"etcd", "greeter-1", "greeter-2", "client"}, []string{"greeter-3"}},
		{"TLS=1", []string{"TLS=1"}, "mutual TLS between the client and the greeters", []string{"etcd", "greeter-1", "greeter-2", "greeter-3", "client"}, nil},
		{"ETCD_ENDPOINTS", []string{"ETCD_ENDPOINTS=" + external.Endpoint()}, "using etcd at " + strings.TrimPrefix(external.Endpoint(), "http://"),
			[]string{"greeter-1", "greeter-2", "greeter-3", "client"}, []string{"etcd"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			root := newRoot(t)
			u := startUp(t, root, tt.env...)
			u.out.await(t, 0, tt.says, 10*time.Second)
			pids := mustRunning(t, root, tt.procs...)
			for _, name := range tt.absent {
				if _, ok := pids[name]; ok {
					t.Errorf("PID file lists %s: %v", name, pids)
				}
			}
			if tt.name == "ETCD_ENDPOINTS" {
				resp, err := external.Client().Get(context.Background(), "rollcall/greeter/", clientv3.WithPrefix(), clientv3.WithCountOnly())
				if err != nil || resp.Count != 3 {
					t.Errorf("greeters registered in the given etcd: %v (%v), want 3", resp.Count, err)
				}
			}
			u.cmd.Process.Signal(syscall.SIGINT)
			if err := u.wait(t, 60*time.Second); err != nil {
				t.Errorf("up exited with %v, want status 0", err)
			}
			assertStopped(t, root, pids)
		})
	}
}

// DETACH=1: up returns while the stack runs on, its output in
// .run/logs/up.log, until down stops it.
func TestDetachedUpRunsUntilDown(t *testing.T) {
	root := newRoot(t)
	if out, err := runDemostack(root, "up", "DETACH=1"); err != nil {
		t.Fatalf("DETACH=1 up: %v\n%s", err, out)
	}
	pids := mustPIDs(t, root)
	logFile := filepath.Join(root, ".run", "logs", "up.log")
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) { // a file gives no event
		if data, _ := os.ReadFile(logFile); strings.Contains(string(data), "call 2:") {
			break
		}
		if time.Now().After(deadline) {
			data, _ := os.ReadFile(logFile)
			t.Fatalf("no call in %s within 60s:\n%s", logFile, data)
		}
	}
	if out, err := runDemostack(root, "down"); err != nil {
		t.Fatalf("down: %v\n%s", err, out)
	}
	assertStopped(t, root, pids)
}
