package serve_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/discovery/access"
	"github.com/rollcall/rollcall/pkg/discovery/discoverytest"
	"github.com/rollcall/rollcall/pkg/etcdtest"
	"github.com/rollcall/rollcall/pkg/flagenv"
	"github.com/rollcall/rollcall/pkg/liveness"
	"github.com/rollcall/rollcall/pkg/serve"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func config() serve.Config {
	return serve.Config{Listen: "127.0.0.1:0", Service: "greeter", ID: "g1", DrainDelay: 2 * time.Second, StopTimeout: 2 * time.Second}
}

// run runs a server with config() until the returned stop is called; ran
// receives what Run returned. The health client is connected to it.
func run(t *testing.T, etcd *clientv3.Client) (health healthpb.HealthClient, stop context.CancelFunc, ran <-chan error) {
	t.Helper()
	s, err := serve.New(config(), etcd, serve.WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	result := make(chan error, 1)
	go func() { result <- s.Run(ctx) }()
	conn, err := grpc.NewClient(s.Instance().Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return healthpb.NewHealthClient(conn), stop, result
}

// events records, in order, what a client and an etcd watcher observe.
type events struct {
	mu   sync.Mutex
	list []string
}

func (e *events) add(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.list) == 0 || e.list[len(e.list)-1] != s {
		e.list = append(e.list, s)
	}
}

func (e *events) String() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return strings.Join(e.list, " -> ")
}

// The shutdown order is what keeps clients from losing calls: they see
// NOT_SERVING, then the key goes, and the server still answers during the
// drain delay, then stops. The health watch and the etcd watch are two
// streams whose deliveries may cross, so the order is read from the
// server: when the key's deletion arrives, its health already says
// NOT_SERVING.
func TestShutdownOrder(t *testing.T) {
	srv := etcdtest.Start(t)
	etcd := srv.Client()
	health, stop, ran := run(t, etcd)

	var ev events
	watchCtx, cancelWatch := context.WithCancel(context.Background())
	defer cancelWatch()
	serving := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancelWatch()
	wg.Go(func() {
		stream, err := health.Watch(watchCtx, &healthpb.HealthCheckRequest{Service: "greeter"})
		if err != nil {
			return
		}
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			if resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
				ev.add("health SERVING")
				close(serving)
				return
			}
		}
	})
	<-serving
	key := "rollcall/greeter/g1"
	registered := awaitKey(t, etcd, key)

	deleted := make(chan struct{})
	wg.Go(func() {
		for resp := range etcd.Watch(watchCtx, key, clientv3.WithRev(registered+1)) {
			for _, e := range resp.Events {
				if e.Type == clientv3.EventTypeDelete {
					ctx, cancel := context.WithTimeout(watchCtx, time.Second)
					st, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: "greeter"})
					cancel()
					ev.add(fmt.Sprintf("key deleted while health %v (%v)", st.GetStatus(), err))
					close(deleted)
					return
				}
			}
		}
	})

	stop()
	<-deleted
	// Draining: the server still answers calls after it deregistered, and
	// a liveness probe still finds it alive.
	callCtx, cancel := context.WithTimeout(context.Background(), time.Second)
	_, err := health.Check(callCtx, &healthpb.HealthCheckRequest{})
	alive, aliveErr := health.Check(callCtx, &healthpb.HealthCheckRequest{Service: liveness.Service})
	cancel()
	if err != nil {
		t.Errorf("call during the drain delay failed: %v", err)
	} else {
		ev.add("call answered")
	}
	if alive.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("liveness during the drain delay: %v %v, want SERVING", alive.GetStatus(), aliveErr)
	}
	if err := <-ran; err != nil {
		t.Fatalf("Run: %v", err)
	}
	ev.add("stopped")

	want := "health SERVING -> key deleted while health NOT_SERVING (<nil>) -> call answered -> stopped"
	if got := ev.String(); got != want {
		t.Errorf("shutdown order:\n got %s\nwant %s", got, want)
	}
}

// awaitKey waits for key to exist and returns its revision.
func awaitKey(t *testing.T, c *clientv3.Client, key string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) > 0 {
		return resp.Header.Revision
	}
	for wresp := range c.Watch(ctx, key, clientv3.WithRev(resp.Header.Revision+1)) {
		for _, e := range wresp.Events {
			if e.Type == clientv3.EventTypePut {
				return wresp.Header.Revision
			}
		}
	}
	t.Fatalf("key %s never appeared", key)
	return 0
}

func TestServesWhileEtcdIsDown(t *testing.T) {
	srv := etcdtest.Start(t)
	etcd := srv.Client()
	srv.Stop()
	health, stop, ran := run(t, etcd)
	callCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := health.Check(callCtx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true)); err != nil {
		t.Errorf("call with etcd down: %v", err)
	}
	srv.Start()
	awaitKey(t, etcd, "rollcall/greeter/g1")
	stop()
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*serve.Config)
		wantErr string
	}{
		{"listen without port", func(c *serve.Config) { c.Listen = "127.0.0.1" }, `invalid listen address "127.0.0.1"`},
		{"advertise wildcard", func(c *serve.Config) { c.Advertise = "0.0.0.0:1" }, `invalid address "0.0.0.0:1"`},
		{"service", func(c *serve.Config) { c.Service = "Greeter!" }, `invalid service name "Greeter!"`},
		{"ttl", func(c *serve.Config) { c.TTL = 500 * time.Millisecond }, "invalid ttl 500ms"},
		{"weight", func(c *serve.Config) { c.Weight = 1 << 20 }, "invalid weight 1048576"},
		{"stop timeout", func(c *serve.Config) { c.StopTimeout = -time.Second }, "invalid stop-timeout -1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config()
			tt.mutate(&cfg)
			s, err := serve.New(cfg, nil, serve.WithLogger(quiet()))
			if err == nil {
				s.Close()
				t.Fatalf("New succeeded; want error containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("New error = %q, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

// A server whose etcd user may not write its service's keys stops once
// etcd has refused for a lease TTL (a role being edited is granted again
// within it), and says why, instead of serving where no client can find it.
func TestRunStopsWhenEtcdDeniesTheRegistration(t *testing.T) {
	shop := access.Service{Name: "shop"}
	srv := discoverytest.StartWithAuth(t, shop, "secret", "root-secret")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	asShop, err := discovery.EtcdConfig{Endpoints: flagenv.List{srv.Endpoint()}, Username: shop.User(), Password: "secret"}.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	defer asShop.Close()
	_, stop, ran := run(t, asShop) // registers as "greeter"
	defer stop()
	select {
	case err := <-ran:
		if err == nil || !strings.Contains(err.Error(), "permission denied") || !strings.Contains(err.Error(), `"rollcall/greeter/"`) {
			t.Fatalf("Run returned %v, want an error naming the denied prefix", err)
		}
	case <-ctx.Done():
		t.Fatal("Run kept serving a registration etcd denied")
	}
}
