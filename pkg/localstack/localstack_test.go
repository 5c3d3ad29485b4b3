package localstack_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/rollcall/rollcall/pkg/localstack"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// etcdBinary returns the etcd binary built from the etcd server module
// that the pkg module requires.
var etcdBinary = sync.OnceValues(func() (string, error) { return localstack.EtcdBinary(".") })

// syncBuffer is a bytes.Buffer that the stack's goroutines and the test
// may use at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func newStack(t *testing.T, cfg localstack.Config) *localstack.Stack {
	t.Helper()
	if cfg.LogDir == "" {
		cfg.LogDir = t.TempDir()
	}
	s, err := localstack.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func TestOutputLinesArePrefixedWithTheProcessName(t *testing.T) {
	var out syncBuffer
	s := newStack(t, localstack.Config{Output: &out})
	seen := s.AwaitLine("talker", "second")
	p, err := s.Start(localstack.Command{Name: "talker", Path: "/bin/sh", Args: []string{"-c", "echo first; echo second >&2"}})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case line := <-seen:
		if line.Text != "second" {
			t.Errorf("awaited line %q, want %q", line.Text, "second")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the line with \"second\" was not seen")
	}
	<-p.Done()
	s.Say("said %d", 1)
	want := "talker    | first\ntalker    | second\n==> said 1\n"
	if got := out.String(); got != want {
		t.Errorf("output:\n%s\nwant:\n%s", got, want)
	}
}

func TestLogFilesHoldEachProcessOutput(t *testing.T) {
	logs := t.TempDir()
	s := newStack(t, localstack.Config{LogDir: logs, Output: &syncBuffer{}, LogFiles: true})
	p, err := s.Start(localstack.Command{Name: "writer", Path: "/bin/sh", Args: []string{"-c", "echo to the file"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(); err != nil {
		t.Errorf("writer exited with %v, want status 0", err)
	}
	got, err := os.ReadFile(filepath.Join(logs, "writer.log"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "to the file\n" {
		t.Errorf("writer.log = %q", got)
	}
}

func TestStopSignalsTheProcessGroupAndKillsAfterTimeout(t *testing.T) {
	s := newStack(t, localstack.Config{Output: &syncBuffer{}})
	ready := s.AwaitLine("stubborn", "ready")
	// The shell ignores SIGTERM; its child sleep, in the same group, does not.
	p, err := s.Start(localstack.Command{Name: "stubborn", Path: "/bin/sh", Args: []string{"-c", "trap '' TERM; echo ready; sleep 60; sleep 60"}})
	if err != nil {
		t.Fatal(err)
	}
	<-ready
	start := time.Now()
	p.Stop(syscall.SIGTERM, 500*time.Millisecond)
	var exit *exec.ExitError
	if err := p.Wait(); !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("exit %v, want killed by SIGKILL", err)
	}
	// Done means the output pipe closed too: the sleep, which holds it,
	// was killed with the shell, as one group.
	if p.Running() {
		t.Fatal("process still running after Stop")
	}
	if took := time.Since(start); took < 500*time.Millisecond || took > 10*time.Second {
		t.Errorf("Stop took %v; want the 500ms timeout, then SIGKILL", took)
	}
}

// Pause returns once the process is stopped, as the kernel reports it,
// and SIGCONT resumes it.
func TestPauseReturnsOnceTheProcessIsStopped(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads the process state from /proc")
	}
	s := newStack(t, localstack.Config{Output: &syncBuffer{}})
	p, err := s.Start(localstack.Command{Name: "sleeper", Path: "/bin/sleep", Args: []string{"60"}})
	if err != nil {
		t.Fatal(err)
	}
	state := func() string {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.PID()))
		if err != nil {
			t.Fatal(err)
		}
		// pid (comm) state ...
		return strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))[0]
	}
	if err := p.Pause(); err != nil {
		t.Fatal(err)
	}
	if got := state(); got != "T" {
		t.Errorf("state after Pause = %s, want T (stopped)", got)
	}
	if err := p.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if !p.Running() {
		t.Error("the process exited after SIGCONT")
	}
}

func TestPIDFileRefusesASecondStackAndStopsTheFirst(t *testing.T) {
	pids := filepath.Join(t.TempDir(), "pids")
	s := newStack(t, localstack.Config{PIDFile: pids})
	p, err := s.Start(localstack.Command{Name: "sleeper", Path: "/bin/sleep", Args: []string{"60"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := localstack.New(localstack.Config{LogDir: t.TempDir(), PIDFile: pids}); !errors.Is(err, localstack.ErrRunning) {
		t.Fatalf("second stack on the same PID file: %v, want ErrRunning", err)
	}
	var stopped []string
	err = localstack.StopPIDFile(pids, 5*time.Second, func(name string, pid int) {
		if pid != p.PID() {
			t.Errorf("stopped pid %d, want %d", pid, p.PID())
		}
		stopped = append(stopped, name)
	})
	if err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	if strings.Join(stopped, ",") != "sleeper" {
		t.Errorf("stopped %v, want [sleeper]", stopped)
	}
	if err := localstack.StopPIDFile(pids, time.Second, nil); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("StopPIDFile after the file was removed: %v, want os.ErrNotExist", err)
	}
}

func startEtcd(t *testing.T, s *localstack.Stack, members int) (*localstack.Etcd, *clientv3.Client) {
	t.Helper()
	bin, err := etcdBinary()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := s.StartEtcd(ctx, localstack.EtcdConfig{Binary: bin, DataDir: filepath.Join(t.TempDir(), "data"), Members: members})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints(), Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return e, cli
}

func TestAwaitKeysFollowsRegistrations(t *testing.T) {
	s := newStack(t, localstack.Config{})
	_, cli := startEtcd(t, s, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	type result struct {
		at  time.Time
		err error
	}
	registered := make(chan result, 1)
	go func() {
		at, err := localstack.AwaitKeys(ctx, cli, "svc/a", "svc/b")
		registered <- result{at, err}
	}()
	lease, err := cli.Grant(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "svc/b", "x"); err != nil { // without a lease: not a registration
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "svc/a", "x", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-registered:
		t.Fatalf("AwaitKeys returned (%v) before svc/b had a lease", r.err)
	case <-time.After(200 * time.Millisecond):
	}
	put := time.Now()
	if _, err := cli.Put(ctx, "svc/b", "x", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	r := <-registered
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.at.Before(put) {
		t.Errorf("AwaitKeys returned %v, before the last key was put at %v", r.at, put)
	}
	if _, err := localstack.AwaitKeys(ctx, cli, "svc/a", "svc/b"); err != nil { // listed, not watched
		t.Fatalf("AwaitKeys for keys already registered: %v", err)
	}

	if _, err := cli.Revoke(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := localstack.AwaitKeysGone(ctx, cli, "svc/a", "svc/b"); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelShort()
	if _, err := localstack.AwaitKeys(short, cli, "svc/never"); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "svc/never") {
		t.Errorf("AwaitKeys for a key never put: %v, want a deadline error naming the key", err)
	}
}

func TestEtcdClusterSurvivesItsLeaderRestarted(t *testing.T) {
	s := newStack(t, localstack.Config{})
	e, cli := startEtcd(t, s, 3)
	if got := len(e.Members()); got != 3 {
		t.Fatalf("%d members, want 3", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	leader, err := e.Leader(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	leader.Process().Stop(syscall.SIGKILL, time.Second)
	if err := e.AwaitHealthy(ctx); err != nil {
		t.Fatalf("two of three members: %v", err)
	}
	if err := e.Restart(ctx, leader); err != nil {
		t.Fatal(err)
	}
	if !leader.Process().Running() {
		t.Error("restarted member is not running")
	}
	if err := e.Restart(ctx, leader); err == nil {
		t.Error("Restart of a running member: no error")
	}
}

func TestMakeCertsWritesUsablePairs(t *testing.T) {
	certs, err := localstack.MakeCerts(t.TempDir(), "client", "greeter")
	if err != nil {
		t.Fatal(err)
	}
	for name, pair := range map[string]struct{ CertFile, KeyFile string }{
		"greeter": certs.Servers["greeter"], "client": certs.Client,
	} {
		if _, err := tls.LoadX509KeyPair(pair.CertFile, pair.KeyFile); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := os.Stat(certs.CAFile); err != nil {
		t.Error(err)
	}
}

// A PID file left by a stack whose owner was killed lists processes that
// are gone: the next stack removes it and starts.
func TestNewRemovesAStalePIDFile(t *testing.T) {
	gone := exec.Command("/bin/true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	pids := filepath.Join(t.TempDir(), "pids")
	if err := os.WriteFile(pids, fmt.Appendf(nil, "etcd %d\n", gone.Process.Pid), 0o644); err != nil {
		t.Fatal(err)
	}
	newStack(t, localstack.Config{PIDFile: pids})
	if _, err := os.Stat(pids); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale PID file: %v, want it removed", err)
	}
}

// Tap sees every line first; the lines it drops reach neither the output
// nor AwaitLine.
func TestTapDropsLinesFromOutput(t *testing.T) {
	var out syncBuffer
	s := newStack(t, localstack.Config{Output: &out})
	var mu sync.Mutex
	var tapped []string
	seen := s.AwaitLine("feed", "data")
	p, err := s.Start(localstack.Command{Name: "feed", Path: "/bin/sh", Args: []string{"-c", "echo {data}; echo data shown"},
		Tap: func(line string) bool {
			mu.Lock()
			defer mu.Unlock()
			tapped = append(tapped, line)
			return !strings.HasPrefix(line, "{")
		}})
	if err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	if line := <-seen; line.Text != "data shown" {
		t.Errorf("AwaitLine saw %q, want the line kept", line.Text)
	}
	if got, want := out.String(), "feed      | data shown\n"; got != want {
		t.Errorf("output %q, want %q", got, want)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(tapped, ",") != "{data},data shown" {
		t.Errorf("tapped %q", tapped)
	}
}

func TestExitSignalTellsAKillFromAnExit(t *testing.T) {
	s := newStack(t, localstack.Config{Output: &syncBuffer{}})
	sleeper, err := s.Start(localstack.Command{Name: "sleeper", Path: "/bin/sleep", Args: []string{"60"}})
	if err != nil {
		t.Fatal(err)
	}
	failing, err := s.Start(localstack.Command{Name: "failing", Path: "/bin/sh", Args: []string{"-c", "exit 3"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := sleeper.ExitSignal(); ok {
		t.Error("ExitSignal of a running process: ok")
	}
	if err := sleeper.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-sleeper.Done()
	if sig, ok := sleeper.ExitSignal(); !ok || sig != syscall.SIGKILL {
		t.Errorf("ExitSignal after kill -9 = %v, %v; want SIGKILL, true", sig, ok)
	}
	<-failing.Done()
	if sig, ok := failing.ExitSignal(); ok {
		t.Errorf("ExitSignal after exit 3 = %v, true; want false", sig)
	}
}

// Instances started one after the other each get a port of their own:
// FreePort never returns an address twice, though each is released (as
// it is until the process it went to binds it).
func TestFreePortNeverRepeats(t *testing.T) {
	seen := map[string]bool{}
	for range 500 {
		addr, err := localstack.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if seen[addr] {
			t.Fatalf("FreePort returned %s twice", addr)
		}
		seen[addr] = true
	}
}
