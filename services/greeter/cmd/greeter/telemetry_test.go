package main_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	greeterv1 "github.com/rollcall/rollcall/api/greeter/v1"
	"github.com/rollcall/rollcall/pkg/call"
	"github.com/rollcall/rollcall/pkg/discovery/resolve"
	"github.com/rollcall/rollcall/pkg/etcdtest"
)

// loggingGreeter is a greeter process logging JSON, whose log records a
// test can wait for.
type loggingGreeter struct {
	cmd     *exec.Cmd
	mu      sync.Mutex
	records []map[string]any
	changed chan struct{}
}

// startLoggingGreeter starts a greeter process with args, logging JSON.
// The process is killed when the test ends.
func startLoggingGreeter(t *testing.T, args ...string) *loggingGreeter {
	t.Helper()
	bin, err := buildGreeter()
	if err != nil {
		t.Fatal(err)
	}
	g := &loggingGreeter{cmd: exec.Command(bin, append([]string{"-log-format", "json"}, args...)...), changed: make(chan struct{})}
	g.cmd.Env = cleanEnv()
	stderr, err := g.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	// Reads the log until the process exits, so it never blocks on a full pipe.
	wg.Go(func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if testing.Verbose() {
				os.Stderr.Write(append(sc.Bytes(), '\n'))
			}
			var rec map[string]any
			if json.Unmarshal(sc.Bytes(), &rec) == nil {
				g.mu.Lock()
				g.records = append(g.records, rec)
				close(g.changed)
				g.changed = make(chan struct{})
				g.mu.Unlock()
			}
		}
		io.Copy(io.Discard, stderr)
	})
	t.Cleanup(func() {
		g.cmd.Process.Kill()
		wg.Wait()
		g.cmd.Wait()
	})
	return g
}

// await returns the n-th record (from 1) whose msg is msg, waiting up to
// 30 s for it.
func (g *loggingGreeter) await(t *testing.T, msg string, n int) map[string]any {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		g.mu.Lock()
		seen, changed := 0, g.changed
		for _, rec := range g.records {
			if rec["msg"] == msg {
				if seen++; seen == n {
					g.mu.Unlock()
					return rec
				}
			}
		}
		g.mu.Unlock()
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("greeter logged no %q (number %d) in 30s", msg, n)
			return nil
		}
	}
}

// A greeter with -metrics-listen serves its gRPC server metrics and its
// registration state on that port.
func TestGreeterServesMetrics(t *testing.T) {
	srv := etcdtest.Start(t)
	rec := startLoggingGreeter(t, "-listen", "127.0.0.1:0", "-id", "g1", "-etcd-endpoints", srv.Endpoint(),
		"-metrics-listen", "127.0.0.1:0").await(t, "serving metrics", 1)
	addr, _ := rec["addr"].(string)

	rb, err := resolve.NewBuilder(srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := call.Dial(rb, "greeter")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := greeterv1.NewGreeterServiceClient(conn)
	const calls = 5
	for range calls {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := client.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "metrics"}, grpc.WaitForReady(true))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}

	body := scrape(t, addr)
	for _, want := range []string{
		`grpc_server_handled_total{grpc_code="OK",grpc_method="SayHello",grpc_service="greeter.v1.GreeterService",grpc_type="unary"} 5`,
		`rollcall_discovery_registration_state{service="greeter",state="registered"} 1`,
		`rollcall_discovery_reregistrations_total{service="greeter"} 0`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics of the greeter has no line %s", want)
		}
	}
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}
