package telemetry_test

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/rollcall/rollcall/pkg/call"
	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/discovery/resolve"
	"github.com/rollcall/rollcall/pkg/etcdtest"
	"github.com/rollcall/rollcall/pkg/flagenv"
	"github.com/rollcall/rollcall/pkg/serve"
	"github.com/rollcall/rollcall/pkg/telemetry"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func newTelemetry(t *testing.T, cfg telemetry.Config) *telemetry.Telemetry {
	t.Helper()
	tel, cleanup, err := telemetry.New(cfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cleanup)
	return tel
}

// startServer runs a greeter instance (health service only) with tel's
// options until the test ends.
func startServer(t *testing.T, etcd *clientv3.Client, id string, tel *telemetry.Telemetry) {
	t.Helper()
	cfg := serve.Config{Listen: "127.0.0.1:0", Service: "greeter", ID: id, DrainDelay: -1, StopTimeout: time.Second}
	s, err := serve.New(cfg, etcd, serve.WithLogger(quiet()),
		serve.WithServerOptions(tel.ServerOptions()...), serve.WithRegisterOptions(tel.RegisterOptions()...))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- s.Run(ctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-ran; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// client dials greeter with tel's options; lists receives the length of
// every list its resolver publishes.
func client(t *testing.T, etcd *clientv3.Client, tel *telemetry.Telemetry) (healthpb.HealthClient, <-chan int) {
	t.Helper()
	lists := make(chan int, 256)
	rb, err := resolve.NewBuilder(etcd, append(tel.ResolveOptions(), resolve.WithLogger(quiet()),
		resolve.WithObserver(resolve.UpdateFunc(func(_ string, list []discovery.Instance) { lists <- len(list) })))...)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := call.Dial(rb, "greeter", call.WithDialOptions(tel.DialOptions()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.Connect() // builds the resolver
	return healthpb.NewHealthClient(conn), lists
}

func awaitLen(t *testing.T, lists <-chan int, n int) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case got := <-lists:
			if got == n {
				return
			}
		case <-timeout:
			t.Fatalf("the resolver never published a list of %d", n)
		}
	}
}

// scrape GETs /metrics from tel's server and returns the value of each
// series, keyed by its line's name and labels as written.
func scrape(t *testing.T, tel *telemetry.Telemetry) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + tel.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	series := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		series[line[:i]] = v
	}
	return series
}

// sum adds the series of metric name whose labels include every
// name="value" of labels; found says whether there was any.
func sum(series map[string]float64, name string, labels ...string) (total float64, found bool) {
next:
	for s, v := range series {
		if s != name && !strings.HasPrefix(s, name+"{") {
			continue
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if !strings.Contains(s, fmt.Sprintf("%s=%q", labels[i], labels[i+1])) {
				continue next
			}
		}
		total, found = total+v, true
	}
	return total, found
}

// awaitMetric scrapes until the series sum is want: what a server records
// after a client saw its answer (its registration state) has no event to
// wait on.
func awaitMetric(t *testing.T, tel *telemetry.Telemetry, want float64, name string, labels ...string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, found := sum(scrape(t, tel), name, labels...)
		if found && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v = %v (found %v), want %v", name, labels, got, found, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// What a user looks for on /metrics of two greeter instances and a
// client, through a real etcd: calls per method and code on both sides,
// each instance registered, the client's list of both, and a watch
// restart after etcd restarts.
func TestMetricsOfServersAndClientThroughEtcd(t *testing.T) {
	srv := etcdtest.Start(t)
	etcd := srv.Client()
	on := telemetry.Config{MetricsListen: "127.0.0.1:0"}
	servers := []*telemetry.Telemetry{newTelemetry(t, on), newTelemetry(t, on)}
	for i, tel := range servers {
		startServer(t, etcd, fmt.Sprintf("g%d", i+1), tel)
	}
	caller := newTelemetry(t, on)
	health, lists := client(t, etcd, caller)
	awaitLen(t, lists, 2)

	// Calls until each server has answered some: the balancer picks by
	// latency, so ten calls may all go to one of them.
	check := []string{"grpc_service", "grpc.health.v1.Health", "grpc_method", "Check"}
	calls := 0
	deadline := time.Now().Add(20 * time.Second)
	for served := 0; served < len(servers); {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: "greeter"}, grpc.WaitForReady(true))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		calls++
		served = 0
		for _, tel := range servers {
			if n, _ := sum(scrape(t, tel), "grpc_server_handled_total", append(check, "grpc_code", "OK")...); n > 0 {
				served++
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %d calls, %d of %d servers answered any", calls, served, len(servers))
		}
	}

	var handled float64
	for _, tel := range servers {
		m := scrape(t, tel)
		n, _ := sum(m, "grpc_server_handled_total", append(check, "grpc_code", "OK")...)
		handled += n
		if _, ok := sum(m, "grpc_server_handling_seconds_bucket", check...); !ok {
			t.Error("no grpc_server_handling_seconds histogram")
		}
		if _, ok := sum(m, "go_goroutines"); !ok {
			t.Error("no Go runtime metrics")
		}
		awaitMetric(t, tel, 1, "rollcall_discovery_registration_state", "service", "greeter", "state", "registered")
		awaitMetric(t, tel, 0, "rollcall_discovery_registration_state", "service", "greeter", "state", "retrying")
	}
	if handled != float64(calls) {
		t.Errorf("servers handled %v Check calls with OK, want %d", handled, calls)
	}

	m := scrape(t, caller)
	if got, _ := sum(m, "grpc_client_handled_total", append(check, "grpc_code", "OK")...); got != float64(calls) {
		t.Errorf("client counted %v Check calls with OK, want %d", got, calls)
	}
	if got, _ := sum(m, "grpc_client_handling_seconds_count", check...); got != float64(calls) {
		t.Errorf("client latency histogram holds %v calls, want %d", got, calls)
	}
	if got, _ := sum(m, "rollcall_discovery_resolver_endpoints", "service", "greeter"); got != 2 {
		t.Errorf("resolver endpoints = %v, want 2", got)
	}
	if got, _ := sum(m, "rollcall_discovery_resolver_updates_total", "service", "greeter"); got < 1 {
		t.Errorf("resolver updates = %v, want at least 1", got)
	}

	// etcd restarts: the client's watch ends and it lists again, counting
	// the restart before it publishes that list.
	srv.Restart()
	awaitLen(t, lists, 2)
	m = scrape(t, caller)
	if got, _ := sum(m, "rollcall_discovery_watch_restarts_total", "service", "greeter"); got < 1 {
		t.Errorf("watch restarts after an etcd restart = %v, want at least 1", got)
	}
	if got, _ := sum(m, "rollcall_discovery_resolver_endpoints", "service", "greeter"); got != 2 {
		t.Errorf("resolver endpoints after an etcd restart = %v, want 2", got)
	}
}

// A span the client starts, the client's span of the call, and the
// server's span of it are one trace: the trace context crosses in the
// call's metadata. Client and server have a tracer each, as two processes
// would.
func TestTraceContextCrossesFromClientToServer(t *testing.T) {
	etcd := etcdtest.Start(t).Client()
	serverSpans, clientSpans := tracetest.NewSpanRecorder(), tracetest.NewSpanRecorder()
	serverTP := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(serverSpans))
	clientTP := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(clientSpans))
	t.Cleanup(func() {
		serverTP.Shutdown(context.Background())
		clientTP.Shutdown(context.Background())
	})
	startServer(t, etcd, "g1", newTelemetry(t, telemetry.Config{TracerProvider: serverTP}))
	caller := newTelemetry(t, telemetry.Config{TracerProvider: clientTP})
	health, lists := client(t, etcd, caller)
	awaitLen(t, lists, 1)

	ctx, parent := caller.TracerProvider().Tracer("test").Start(context.Background(), "say hello")
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	// WaitForReady: the list of one may reach the resolver a moment
	// before gRPC's balancer has it.
	if _, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: "greeter"}, grpc.WaitForReady(true)); err != nil {
		t.Fatal(err)
	}
	parent.End()

	const name = "grpc.health.v1.Health/Check"
	// Spans are recorded when they start: the server's may end after the
	// client has its answer.
	cs := spansNamed(clientSpans.Started(), name, trace.SpanKindClient)
	ss := spansNamed(serverSpans.Started(), name, trace.SpanKindServer)
	if len(cs) != 1 || len(ss) != 1 {
		t.Fatalf("%d client and %d server spans named %s, want 1 each", len(cs), len(ss), name)
	}
	c, s := cs[0], ss[0]
	if c.Parent().SpanID() != parent.SpanContext().SpanID() {
		t.Errorf("client span's parent %v, want the caller's span %v", c.Parent().SpanID(), parent.SpanContext().SpanID())
	}
	if s.SpanContext().TraceID() != parent.SpanContext().TraceID() {
		t.Errorf("server span in trace %v, want the caller's %v", s.SpanContext().TraceID(), parent.SpanContext().TraceID())
	}
	if !s.Parent().IsRemote() || s.Parent().SpanID() != c.SpanContext().SpanID() {
		t.Errorf("server span's parent %v (remote %v), want the client span %v from the other side", s.Parent().SpanID(), s.Parent().IsRemote(), c.SpanContext().SpanID())
	}
}

func spansNamed(spans []sdktrace.ReadWriteSpan, name string, kind trace.SpanKind) []sdktrace.ReadWriteSpan {
	var out []sdktrace.ReadWriteSpan
	for _, s := range spans {
		if s.Name() == name && s.SpanKind() == kind {
			out = append(out, s)
		}
	}
	return out
}

// Off (the default), telemetry adds nothing to servers, clients or
// discovery, and serves nothing.
func TestOffAddsNothing(t *testing.T) {
	tel := newTelemetry(t, telemetry.Config{})
	if n := len(tel.ServerOptions()) + len(tel.DialOptions()) + len(tel.RegisterOptions()) + len(tel.ResolveOptions()); n != 0 {
		t.Errorf("%d options with telemetry off, want 0", n)
	}
	if tel.MetricsAddr() != "" {
		t.Errorf("metrics served on %s with metrics off", tel.MetricsAddr())
	}
	if tel.TracerProvider() == nil {
		t.Error("nil TracerProvider with tracing off; want one that makes no spans")
	}
}

func TestBadValuesAreErrorsNamingThem(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	tests := []struct {
		args    []string
		env     map[string]string
		wantErr string
	}{
		{[]string{"-metrics-listen", "nope"}, nil, `invalid metrics-listen address "nope"`},
		{nil, map[string]string{"METRICS_LISTEN": ":99999"}, `invalid metrics-listen address ":99999": port must be 0-65535`},
		{[]string{"-otlp-endpoint", "localhost:4317"}, nil, `invalid OTLP endpoint "localhost:4317": want http://host:port or https://host:port`},
		{nil, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://"}, `invalid OTLP endpoint "http://"`},
		{[]string{"-metrics-listen", taken.Addr().String()}, nil, "listen for metrics on " + taken.Addr().String()},
	}
	for _, tt := range tests {
		t.Run(tt.wantErr, func(t *testing.T) {
			var cfg telemetry.Config
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			env := map[string]string{}
			cfg.RegisterFlags(fs, env)
			if err := flagenv.Parse(fs, env, tt.args, func(k string) string { return tt.env[k] }); err != nil {
				t.Fatal(err)
			}
			_, cleanup, err := telemetry.New(cfg, quiet())
			if err == nil {
				cleanup()
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("New error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// An OTLP endpoint turns tracing on without any I/O at start: a collector
// that is not there costs no failed start, and cleanup returns.
func TestTracingToAnAbsentCollectorStartsAndStops(t *testing.T) {
	tel, cleanup, err := telemetry.New(telemetry.Config{OTLPEndpoint: "http://127.0.0.1:1", ServiceName: "greeter"}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if len(tel.ServerOptions()) != 1 || len(tel.DialOptions()) != 1 {
		t.Errorf("tracing on: %d server and %d dial options, want a stats handler each", len(tel.ServerOptions()), len(tel.DialOptions()))
	}
	_, span := tel.TracerProvider().Tracer("test").Start(context.Background(), "lost")
	span.End()
	done := make(chan struct{})
	go func() { cleanup(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("cleanup did not return within 10s")
	}
}
