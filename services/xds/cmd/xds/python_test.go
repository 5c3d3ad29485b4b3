package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rollcall/rollcall/pkg/call/callxds"
	"github.com/rollcall/rollcall/pkg/etcdtest"
	"github.com/rollcall/rollcall/pkg/localstack"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// python is Debian's interpreter, which sees Debian's python3-grpcio; a
// python3 first on PATH may be another one (pyenv) without it.
const python = "/usr/bin/python3"

// pythonWithGRPC makes sure python can import grpc, installing Debian's
// python3-grpcio with apt when it can (as root, or through sudo without a
// password), and skips the test, saying why, when it cannot.
func pythonWithGRPC(t *testing.T) {
	t.Helper()
	hasGRPC := func() bool { return exec.Command(python, "-c", "import grpc").Run() == nil }
	if _, err := os.Stat(python); err != nil {
		t.Skipf("no %s: the Python client test needs Debian's python3 and python3-grpcio", python)
	}
	if hasGRPC() {
		return
	}
	t.Log("installing python3-grpcio with apt-get")
	if err := localstack.InstallDebian("python3-grpcio"); err != nil {
		t.Skipf("python3-grpcio is not installed: %v", err)
	}
	if !hasGRPC() {
		t.Skipf("python3-grpcio installed, yet %s cannot import grpc", python)
	}
}

func lastLines(out []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

// tally counts the Python client's calls as it prints them.
type tally struct {
	mu      sync.Mutex
	ok      map[string]int // calls answered, by instance
	failed  []string
	total   int
	changed chan struct{}
}

func (t *tally) read(sc *bufio.Scanner) {
	for sc.Scan() {
		line := sc.Text()
		t.mu.Lock()
		if id, ok := strings.CutPrefix(line, "ok "); ok {
			t.ok[id]++
		} else {
			t.failed = append(t.failed, line)
		}
		t.total++
		close(t.changed)
		t.changed = make(chan struct{})
		t.mu.Unlock()
	}
}

// await waits until cond holds on the counts, up to 30 s.
func (t *tally) await(tb testing.TB, what string, cond func(ok map[string]int, total int) bool) {
	tb.Helper()
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	for {
		t.mu.Lock()
		done, changed := cond(t.ok, t.total), t.changed
		ok, failed := fmt.Sprint(t.ok), len(t.failed)
		t.mu.Unlock()
		if done {
			return
		}
		select {
		case <-changed:
		case <-timeout.C:
			tb.Fatalf("Python client: no %s within 30 s: answered %s, failed %d", what, ok, failed)
		}
	}
}

// A Python client that knows only the control plane (its bootstrap) and
// the method's path reaches every greeter instance, and loses no call when
// one is stopped with SIGTERM or killed with SIGKILL: the instance leaves
// the cluster, and calls that were on it are retried elsewhere (the retry
// policy of the route).
func TestPythonClientThroughXDS(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries and runs processes")
	}
	pythonWithGRPC(t)
	dir := t.TempDir()
	for _, b := range [][3]string{ // module directory, binary, package
		{".", "xds", "."},
		{"../../../greeter", "greeter", "./cmd/greeter"},
	} {
		if err := localstack.Build(b[0], filepath.Join(dir, b[1]), b[2]); err != nil {
			t.Fatal(err)
		}
	}
	etcd := etcdtest.Start(t)
	procs, err := localstack.New(localstack.Config{LogDir: dir, KillOnExit: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		procs.Close()
		if t.Failed() {
			for _, name := range []string{"xds", "g1", "g2", "g3"} {
				out, _ := os.ReadFile(filepath.Join(dir, name+".log"))
				t.Logf("%s's log:\n%s", name, lastLines(out, 20))
			}
		}
	})
	common := []string{"-etcd-endpoints", etcd.Endpoint(), "-log-format", "text", "-log-level", "warn"}
	cpAddr, err := localstack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := procs.Start(localstack.Command{Name: "xds", Path: filepath.Join(dir, "xds"),
		Args: append([]string{"-listen", cpAddr, "-id", "cp", "-services", "greeter"}, common...)}); err != nil {
		t.Fatal(err)
	}
	greeters := map[string]*localstack.Process{}
	keys := []string{"rollcall/xds/cp"}
	for _, id := range []string{"g1", "g2", "g3"} {
		addr, err := localstack.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if greeters[id], err = procs.Start(localstack.Command{Name: id, Path: filepath.Join(dir, "greeter"),
			Args: append([]string{"-listen", addr, "-id", id}, common...)}); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, "rollcall/greeter/"+id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := localstack.AwaitKeys(ctx, etcd.Client(), keys...); err != nil {
		t.Fatal(err)
	}

	bootstrap, err := callxds.Bootstrap("python-test", cpAddr)
	if err != nil {
		t.Fatal(err)
	}
	bootstrapFile := filepath.Join(dir, "bootstrap.json")
	if err := os.WriteFile(bootstrapFile, bootstrap, 0o644); err != nil {
		t.Fatal(err)
	}
	client := exec.Command(python, "../../examples/python/greeter_client.py", "4")
	client.Env = append(os.Environ(), "GRPC_XDS_BOOTSTRAP="+bootstrapFile)
	client.Stderr = t.Output()
	stdin, err := client.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := client.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Start(); err != nil {
		t.Fatal(err)
	}
	calls := &tally{ok: map[string]int{}, changed: make(chan struct{})}
	read := make(chan struct{})
	go func() { defer close(read); calls.read(bufio.NewScanner(stdout)) }()
	stopClient := sync.OnceFunc(func() { stdin.Close(); <-read; client.Wait() })
	defer stopClient()

	calls.await(t, "calls on every instance", func(ok map[string]int, _ int) bool {
		return ok["g1"] > 0 && ok["g2"] > 0 && ok["g3"] > 0
	})
	// Each stop happens while the client keeps calling, and the calls
	// after it must all be answered by the instances left.
	for _, stop := range []struct {
		id  string
		sig syscall.Signal
	}{{"g2", syscall.SIGTERM}, {"g3", syscall.SIGKILL}} {
		greeters[stop.id].Stop(stop.sig, 20*time.Second)
		// Replies it sent before it exited may still be on their way
		// into the client's output: count from 100 calls after the exit.
		calls.mu.Lock()
		exited := calls.total
		calls.mu.Unlock()
		var from, before int
		calls.await(t, fmt.Sprintf("100 calls after %v of %s", stop.sig, stop.id), func(ok map[string]int, total int) bool {
			from, before = total, ok[stop.id]
			return total >= exited+100
		})
		calls.await(t, fmt.Sprintf("300 calls after %v of %s", stop.sig, stop.id), func(_ map[string]int, total int) bool {
			return total >= from+200
		})
		calls.mu.Lock()
		after := calls.ok[stop.id]
		calls.mu.Unlock()
		if after > before {
			t.Errorf("%s answered %d calls long after it exited", stop.id, after-before)
		}
	}
	stopClient()
	t.Logf("Python client: answered %v, failed %d", calls.ok, len(calls.failed))
	if len(calls.failed) > 0 {
		t.Errorf("%d calls failed, want 0: %v", len(calls.failed), calls.failed[:min(len(calls.failed), 5)])
	}
}
