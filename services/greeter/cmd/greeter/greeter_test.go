package main_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/status"

	greeterv1 "github.com/rollcall/rollcall/api/greeter/v1"
	"github.com/rollcall/rollcall/pkg/call"
	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/discovery/resolve"
	"github.com/rollcall/rollcall/pkg/etcdtest"
	"github.com/rollcall/rollcall/pkg/localstack"
)

// buildGreeter builds this command once per test binary.
var buildGreeter = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "greeter-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "greeter")
	if err := localstack.Build(".", bin, "."); err != nil {
		return "", err
	}
	return bin, nil
})

// cleanEnv is the test's environment without the variables a greeter
// reads, so that a developer's settings do not leak into the processes a
// test starts.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !slices.ContainsFunc(greeterEnvPrefixes, func(p string) bool { return strings.HasPrefix(name, p) }) {
			env = append(env, kv)
		}
	}
	return env
}

var greeterEnvPrefixes = []string{"ETCD_", "OTEL_", "GREETER_", "INSTANCE_", "REGISTER_", "DISCOVERY_", "TLS_", "METRICS_",
	"LOG_", "LISTEN_ADDR", "ADVERTISE_ADDR", "SERVICE_NAME", "DRAIN_", "STOP_"}

// greeter is one greeter process, logging JSON, whose log records a test
// can wait for.
type greeter struct {
	id    string
	stack *localstack.Stack
	proc  *localstack.Process
}

// startGreeter starts a greeter process on a free port and returns it with
// its first log record whose msg is ready. The process is killed when the
// test ends; its log goes to the test's stderr with -v.
func startGreeter(t *testing.T, etcd, id, ready string, extra ...string) (*greeter, map[string]any) {
	t.Helper()
	bin, err := buildGreeter()
	if err != nil {
		t.Fatal(err)
	}
	cfg := localstack.Config{LogDir: t.TempDir(), KillOnExit: true, Output: io.Discard}
	if testing.Verbose() {
		cfg.Output = os.Stderr
	}
	s, err := localstack.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	g := &greeter{id: id, stack: s}
	first := s.AwaitLine(id, msgField(ready))
	args := append([]string{"-listen", "127.0.0.1:0", "-id", id, "-etcd-endpoints", etcd, "-log-format", "json"}, extra...)
	if g.proc, err = s.Start(localstack.Command{Name: id, Path: bin, Args: args, Env: cleanEnv()}); err != nil {
		t.Fatal(err)
	}
	return g, g.record(t, first)
}

// signal sends sig to the greeter and returns its next log record whose
// msg is msg.
func (g *greeter) signal(t *testing.T, sig syscall.Signal, msg string) map[string]any {
	t.Helper()
	next := g.stack.AwaitLine(g.id, msgField(msg))
	if err := g.proc.Signal(sig); err != nil {
		t.Fatal(err)
	}
	return g.record(t, next)
}

// record decodes the log line that lines delivers, within 30 s.
func (g *greeter) record(t *testing.T, lines <-chan localstack.Line) map[string]any {
	t.Helper()
	select {
	case line := <-lines:
		var rec map[string]any
		if err := json.Unmarshal([]byte(line.Text), &rec); err != nil {
			t.Fatalf("%s logged %q: %v", g.id, line.Text, err)
		}
		return rec
	case <-g.proc.Done():
		t.Fatalf("%s exited (%v) before logging the record awaited", g.id, g.proc.Wait())
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not log the record awaited within 30s", g.id)
	}
	return nil
}

func msgField(msg string) string { return `"msg":"` + msg + `"` }

// cluster is etcd, three greeter processes and a client dialed the
// default way, with the resolver's lists observable.
type cluster struct {
	etcd     *etcdtest.Server
	greeters []*greeter
	client   greeterv1.GreeterServiceClient

	mu      sync.Mutex
	history [][]string
	last    []string
	changed chan struct{}
}

func startCluster(t *testing.T) *cluster {
	srv := etcdtest.Start(t)
	c := &cluster{etcd: srv, changed: make(chan struct{})}
	for i := 1; i <= 3; i++ {
		g, _ := startGreeter(t, srv.Endpoint(), fmt.Sprintf("g%d", i), "registered in etcd")
		c.greeters = append(c.greeters, g)
	}
	rb, err := resolve.NewBuilder(srv.Client(), resolve.WithObserver(resolve.UpdateFunc(func(_ string, list []discovery.Instance) {
		ids := make([]string, len(list))
		for i, inst := range list {
			ids[i] = inst.ID
		}
		c.mu.Lock()
		c.history = append(c.history, ids)
		c.last = ids
		close(c.changed)
		c.changed = make(chan struct{})
		c.mu.Unlock()
	})))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := call.Dial(rb, "greeter")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.Connect()
	c.client = greeterv1.NewGreeterServiceClient(conn)
	c.awaitList(t, "g1", "g2", "g3")
	c.awaitServedBy(t, "g1", "g2", "g3")
	return c
}

// awaitServedBy calls until each of ids answered: the channel has caught
// up with the list the resolver published.
func (c *cluster) awaitServedBy(t *testing.T, ids ...string) {
	t.Helper()
	seen := map[string]bool{}
	deadline := time.Now().Add(30 * time.Second)
	for len(seen) < len(ids) {
		if id, err := oneCall(c.client, false); err == nil {
			seen[id] = true
		} else if time.Now().After(deadline) {
			t.Fatalf("instances %v never all answered; last error %v", ids, err)
		}
	}
}

func (c *cluster) awaitList(t *testing.T, ids ...string) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		c.mu.Lock()
		last, changed := c.last, c.changed
		c.mu.Unlock()
		if slices.Equal(last, ids) {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("resolver list %v never became %v", last, ids)
		}
	}
}

// load runs 32 closed-loop workers until stop, counting calls per
// instance and every failure.
type load struct {
	mu       sync.Mutex
	ok       int64
	goal     int64
	reached  chan struct{} // closed when ok reaches goal
	byID     map[string]int
	failures []string
	stop     chan struct{}
	wg       sync.WaitGroup
}

func startLoad(c *cluster, stream bool) *load {
	l := &load{byID: map[string]int{}, stop: make(chan struct{})}
	for w := range 32 {
		l.wg.Go(func() {
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				id, err := oneCall(c.client, stream && w%4 == 0)
				l.mu.Lock()
				if err != nil {
					l.failures = append(l.failures, fmt.Sprintf("%v (%s)", err, status.Code(err)))
				} else {
					l.byID[id]++
					l.ok++
					if l.reached != nil && l.ok >= l.goal {
						close(l.reached)
						l.reached = nil
					}
				}
				l.mu.Unlock()
			}
		})
	}
	return l
}

// oneCall makes a SayHello call, or a StreamHellos call of 3 messages.
func oneCall(c greeterv1.GreeterServiceClient, stream bool) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if !stream {
		resp, err := c.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "test"})
		return resp.GetInstanceId(), err
	}
	s, err := c.StreamHellos(ctx, &greeterv1.StreamHellosRequest{Name: "test", Count: 3})
	if err != nil {
		return "", err
	}
	var id string
	for n := 0; ; n++ {
		msg, err := s.Recv()
		if errors.Is(err, io.EOF) {
			if n != 3 {
				return "", fmt.Errorf("stream ended after %d of 3 messages", n)
			}
			return id, nil
		}
		if err != nil {
			return "", err
		}
		id = msg.GetInstanceId()
	}
}

// awaitCalls waits until n more calls succeeded.
func (l *load) awaitCalls(t *testing.T, n int64) {
	t.Helper()
	l.mu.Lock()
	l.goal = l.ok + n
	reached := make(chan struct{})
	l.reached = reached
	l.mu.Unlock()
	select {
	case <-reached:
	case <-time.After(30 * time.Second):
		l.mu.Lock()
		defer l.mu.Unlock()
		t.Fatalf("load stalled: %d calls succeeded, waiting for %d", l.ok, l.goal)
	}
}

func (l *load) finish() (map[string]int, []string) {
	close(l.stop)
	l.wg.Wait()
	return l.byID, l.failures
}

// Stopping one of three instances under 32 workers loses no call: kill -9
// none of an idempotent method (in-flight calls are retried on another
// instance); SIGTERM none of any method, streams included (it stops being
// picked, deregisters, drains, then stops gracefully).
func TestStoppingOneInstanceLosesNoCall(t *testing.T) {
	tests := []struct {
		name    string
		signal  syscall.Signal
		streams bool // also StreamHellos calls, which are not retried
	}{
		{"kill -9, idempotent calls", syscall.SIGKILL, false},
		{"SIGTERM, every method", syscall.SIGTERM, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := startCluster(t)
			l := startLoad(c, tt.streams)
			l.awaitCalls(t, 3000)

			victim := c.greeters[1]
			victim.proc.Signal(tt.signal)
			exit := victim.proc.Wait()
			if tt.signal == syscall.SIGTERM {
				c.awaitList(t, "g1", "g3") // deregistered, not left to its lease
			}
			l.awaitCalls(t, 3000)
			byID, failures := l.finish()

			if tt.signal == syscall.SIGTERM && exit != nil {
				t.Errorf("greeter exited with %v after SIGTERM, want status 0", exit)
			}
			if len(failures) > 0 {
				t.Errorf("%d calls failed, want 0; first: %s; lists %v", len(failures), failures[0], c.history)
			}
			if byID["g1"] == 0 || byID["g3"] == 0 {
				t.Errorf("calls per instance %v: survivors should share the load", byID)
			}
			t.Logf("calls per instance: %v", byID)
		})
	}
}

func TestBadFlagStopsAtStartNamingIt(t *testing.T) {
	bin, err := buildGreeter()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args    []string
		env     string
		wantErr string
	}{
		{[]string{"-listen", "nope"}, "", `invalid listen address "nope"`},
		{[]string{"-ttl", "0s"}, "", "invalid ttl 0s"},
		{nil, "REGISTER_TTL=soon", `invalid REGISTER_TTL="soon"`},
		{[]string{"-etcd-endpoints", "http://"}, "", `invalid etcd endpoint "http://"`},
		{[]string{"-labels", "novalue"}, "", `"novalue" is not key=value`},
		{[]string{"-latency", "-1s"}, "", "invalid latency -1s"},
		{[]string{"-metrics-listen", "nope"}, "", `invalid metrics-listen address "nope"`},
		{nil, "METRICS_LISTEN=:http-alt", `invalid metrics-listen address ":http-alt"`},
		{nil, "OTEL_EXPORTER_OTLP_ENDPOINT=collector:4317", `invalid OTLP endpoint "collector:4317"`},
		{[]string{"-tls-cert", "/nonexistent/cert.pem"}, "", `certificate "/nonexistent/cert.pem" and key ""`},
		{[]string{"-tls-client-ca", "/nonexistent/ca.pem"}, "", `tls-client-ca "/nonexistent/ca.pem" needs tls-cert`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(append(tt.args, tt.env), " "), func(t *testing.T) {
			cmd := exec.Command(bin, tt.args...)
			cmd.Env = append(cleanEnv(), tt.env)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 2 {
				t.Fatalf("exit = %v, want status 2; output %s", err, out)
			}
			if lines := strings.Count(strings.TrimSpace(string(out)), "\n") + 1; lines != 1 || !strings.Contains(string(out), tt.wantErr) {
				t.Errorf("output %q: want one line containing %q", out, tt.wantErr)
			}
		})
	}
}
