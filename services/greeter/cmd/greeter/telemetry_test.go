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

// startGreeterLogging starts a greeter process logging JSON and returns
// the first record of its whose msg is msg. The process is killed when the
// test ends.
func startGreeterLogging(t *testing.T, msg string, args ...string) map[string]any {
	t.Helper()
	bin, err := buildGreeter()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{"-log-format", "json"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	found := make(chan map[string]any, 1)
	var wg sync.WaitGroup
	// Reads the log until the process exits, so it never blocks on a full pipe.
	wg.Go(func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if testing.Verbose() {
				os.Stderr.Write(append(sc.Bytes(), '\n'))
			}
			var rec map[string]any
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] == msg {
				select {
				case found <- rec:
				default:
				}
			}
		}
		io.Copy(io.Discard, stderr)
	})
	t.Cleanup(func() {
		cmd.Process.Kill()
		wg.Wait()
		cmd.Wait()
	})
	select {
	case rec := <-found:
		return rec
	case <-time.After(30 * time.Second):
		t.Fatalf("greeter logged no %q in 30s", msg)
		return nil
	}
}

// A greeter with -metrics-listen serves its gRPC server metrics and its
// registration state on that port.
func TestGreeterServesMetrics(t *testing.T) {
	srv := etcdtest.Start(t)
	rec := startGreeterLogging(t, "serving metrics",
		"-listen", "127.0.0.1:0", "-id", "g1", "-etcd-endpoints", srv.Endpoint(), "-metrics-listen", "127.0.0.1:0")
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
