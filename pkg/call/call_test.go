package call_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/grpclog"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/rollcall/rollcall/pkg/balance"
	"github.com/rollcall/rollcall/pkg/call"
	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/discovery/discoverytest"
	"github.com/rollcall/rollcall/pkg/discovery/register"
	"github.com/rollcall/rollcall/pkg/discovery/resolve"
	"github.com/rollcall/rollcall/pkg/etcdtest"
)

// grpcInfo holds gRPC's own log lines, where a server says why it
// refused a connection.
var grpcInfo = newLogLines()

func TestMain(m *testing.M) {
	grpclog.SetLoggerV2(grpclog.NewLoggerV2(grpcInfo, io.Discard, io.Discard))
	goleak.VerifyTestMain(m)
}

// logLines is a log sink that a test can wait on for a line.
type logLines struct {
	mu      sync.Mutex
	text    strings.Builder
	changed chan struct{}
}

func newLogLines() *logLines { return &logLines{changed: make(chan struct{})} }

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.text.Write(p)
	close(l.changed)
	l.changed = make(chan struct{})
	return len(p), nil
}

// mark is where the log ends now, for await.
func (l *logLines) mark() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.text.Len()
}

// await waits up to 10 s until the log after mark has text, and reports
// whether it has.
func (l *logLines) await(mark int, text string) bool {
	timeout := time.After(10 * time.Second)
	for {
		l.mu.Lock()
		found, changed := strings.Contains(l.text.String()[mark:], text), l.changed
		l.mu.Unlock()
		if found {
			return true
		}
		select {
		case <-changed:
		case <-timeout:
			return false
		}
	}
}

// The default service config names the policy and health-checks the
// service, and has no retry policy of gRPC's: retries are the
// interceptor's, within its budget.
func TestServiceConfigIsValidWithoutGRPCRetries(t *testing.T) {
	var cfg struct {
		LoadBalancingConfig []map[string]any
		HealthCheckConfig   struct{ ServiceName string }
		MethodConfig        []any
		RetryThrottling     any
	}
	sc := call.ServiceConfig("greeter", call.DefaultPolicy)
	if err := json.Unmarshal([]byte(sc), &cfg); err != nil {
		t.Fatalf("service config is not JSON: %v\n%s", err, sc)
	}
	if _, ok := cfg.LoadBalancingConfig[0][call.DefaultPolicy]; !ok || cfg.HealthCheckConfig.ServiceName != "greeter" {
		t.Errorf("service config %s: want %s with health checks of service greeter", sc, call.DefaultPolicy)
	}
	if cfg.MethodConfig != nil || cfg.RetryThrottling != nil {
		t.Errorf("service config %s: want no methodConfig (retry policy) and no retryThrottling", sc)
	}
	// grpc.NewClient parses the config: an invalid one fails here.
	conn, err := grpc.NewClient("passthrough:///127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(sc))
	if err != nil {
		t.Fatalf("gRPC rejects the service config: %v", err)
	}
	conn.Close()
}

// startBackend serves the health service on 127.0.0.1 and registers it.
func startBackend(tb testing.TB, srv *etcdtest.Server) string {
	tb.Helper()
	hs := health.NewServer()
	hs.SetServingStatus("bench", healthpb.HealthCheckResponse_SERVING)
	addr := discoverytest.Serve(tb, hs)
	discoverytest.Register(tb, srv.Client(), discovery.Instance{Service: "bench", ID: "b1", Addr: addr},
		register.WithLogger(slog.New(slog.DiscardHandler)))
	return addr
}

// BenchmarkUnaryCall compares a call through discovery and balancing
// (call.Dial, with each policy) with a call over a direct connection, to
// the same server.
func BenchmarkUnaryCall(b *testing.B) {
	srv := etcdtest.Start(b)
	addr := startBackend(b, srv)
	rb, err := resolve.NewBuilder(srv.Client())
	if err != nil {
		b.Fatal(err)
	}
	direct, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer direct.Close()
	cases := []struct {
		name string
		conn *grpc.ClientConn
	}{{"direct", direct}}
	for _, policy := range []string{"round_robin", balance.Weighted, balance.P2CEWMA} {
		conn, err := call.Dial(rb, "bench", call.WithPolicy(policy))
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		cases = append(cases, struct {
			name string
			conn *grpc.ClientConn
		}{"discovery/" + policy, conn})
	}
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			client := healthpb.NewHealthClient(bc.conn)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true)); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// The traffic options go into a rollcall policy's config, checked at
// Dial: a bad value fails it with an error naming the value; a policy not
// rollcall's ignores them.
func TestTrafficOptions(t *testing.T) {
	srv := etcdtest.Start(t)
	rb, err := resolve.NewBuilder(srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	tooFew := balance.DefaultOutlierEjection()
	tooFew.MinimumCalls = 0
	tests := []struct {
		name    string
		opts    []call.Option
		wantErr string
	}{
		{"every part set", []call.Option{call.WithZone("eu-west-1a"), call.WithSlowStart(30 * time.Second),
			call.WithOutlierEjection(balance.DefaultOutlierEjection())}, ""},
		{"every part off", []call.Option{call.WithZone(""), call.WithSlowStart(0), call.WithoutOutlierEjection()}, ""},
		{"rollcall_weighted", []call.Option{call.WithPolicy(balance.Weighted), call.WithZone("a")}, ""},
		{"round_robin ignores them", []call.Option{call.WithPolicy("round_robin"), call.WithZone("a"), call.WithSlowStart(-1)}, ""},
		{"zone too long", []call.Option{call.WithZone(strings.Repeat("z", 200))}, "zone of 200 bytes"},
		{"slow start negative", []call.Option{call.WithSlowStart(-time.Second)}, "slowStartWindow -1s"},
		{"slow start too long", []call.Option{call.WithSlowStart(time.Hour)}, "slowStartWindow 1h0m0s"},
		{"bad ejection", []call.Option{call.WithOutlierEjection(tooFew)}, "outlierEjection.minimumCalls 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := call.Dial(rb, "svc", tt.opts...)
			if err == nil {
				conn.Close()
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Dial error %v, want none", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "svc")):
				t.Errorf("Dial error %v, want one naming svc and containing %q", err, tt.wantErr)
			}
		})
	}
}
