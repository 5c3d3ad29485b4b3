package balance_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/rollcall/rollcall/pkg/balance"
	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/discovery/discoverytest"
	"github.com/rollcall/rollcall/pkg/discovery/register"
	"github.com/rollcall/rollcall/pkg/discovery/resolve"
	"github.com/rollcall/rollcall/pkg/etcdtest"
	"github.com/rollcall/rollcall/pkg/liveness"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// backend is a real gRPC server whose health service sends rollcall's
// heartbeat, and which can be paused: it then neither beats nor answers,
// like a process under SIGSTOP.
type backend struct {
	healthpb.UnimplementedHealthServer
	id      string
	addr    string
	latency time.Duration
	paused  atomic.Bool
	resume  chan struct{}
	mu      sync.Mutex
	// failCode, when not OK, is the code Check answers with.
	failCode atomic.Uint32
	calls    atomic.Int64 // Check calls
}

func (b *backend) wait(ctx context.Context) error {
	for b.paused.Load() {
		b.mu.Lock()
		ch := b.resume
		b.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (b *backend) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if err := b.wait(ctx); err != nil {
		return nil, err
	}
	b.calls.Add(1)
	time.Sleep(b.latency) // the backend's service time, not synchronization
	if c := codes.Code(b.failCode.Load()); c != codes.OK {
		return nil, status.Error(c, "injected failure")
	}
	grpc.SetHeader(ctx, metadata.Pairs("instance-id", b.id))
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func (b *backend) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	tick := time.NewTicker(liveness.Interval)
	defer tick.Stop()
	for {
		if err := b.wait(stream.Context()); err != nil {
			return err
		}
		if err := stream.Send(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}); err != nil {
			return err
		}
		if req.GetService() != liveness.Service {
			<-stream.Context().Done()
			return nil
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-tick.C:
		}
	}
}

func (b *backend) pause() {
	b.mu.Lock()
	b.resume = make(chan struct{})
	b.mu.Unlock()
	b.paused.Store(true)
}

func (b *backend) unpause() {
	b.paused.Store(false)
	b.mu.Lock()
	close(b.resume)
	b.mu.Unlock()
}

func startBackends(t *testing.T, srv *etcdtest.Server, weights ...uint32) []*backend {
	t.Helper()
	return startBackendsVia(t, srv.Client(), 0, weights...)
}

// startBackendsVia registers the backends through etcd, with lease TTL
// ttl (0 for the default).
func startBackendsVia(t *testing.T, etcd *clientv3.Client, ttl time.Duration, weights ...uint32) []*backend {
	t.Helper()
	opts := []register.Option{register.WithLogger(slog.New(slog.DiscardHandler))}
	if ttl > 0 {
		opts = append(opts, register.WithTTL(ttl))
	}
	var out []*backend
	for i, w := range weights {
		b := &backend{id: fmt.Sprintf("b%d", i+1), latency: time.Millisecond, resume: make(chan struct{})}
		b.addr = discoverytest.Serve(t, b)
		discoverytest.Register(t, etcd, discovery.Instance{Service: "svc", ID: b.id, Addr: b.addr, Metadata: discovery.Metadata{Weight: w}}, opts...)
		t.Cleanup(func() { // runs first: resume before the registration closes and the server stops
			if b.paused.Load() {
				b.unpause()
			}
		})
		out = append(out, b)
	}
	return out
}

func dial(t *testing.T, srv *etcdtest.Server, policy string) healthpb.HealthClient {
	t.Helper()
	return dialConfig(t, srv, policy, "{}")
}

func dialConfig(t *testing.T, srv *etcdtest.Server, policy, config string) healthpb.HealthClient {
	t.Helper()
	rb, err := resolve.NewBuilder(srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	conn := discoverytest.Dial(t, rb, "svc", `{"loadBalancingConfig":[{"`+policy+`":`+config+`}]}`)
	return healthpb.NewHealthClient(conn)
}

// spread makes n calls, each with a deadline, and counts them per backend.
func spread(client healthpb.HealthClient, n int, deadline time.Duration) map[string]int {
	counts := map[string]int{}
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		var md metadata.MD
		_, err := client.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&md))
		cancel()
		if err != nil {
			counts["error"]++
			if status.Code(err) == codes.NotFound {
				counts["notfound"]++
			}
			continue
		}
		counts[md.Get("instance-id")[0]]++
	}
	return counts
}

// awaitAll calls until every backend has answered.
func awaitAll(t *testing.T, client healthpb.HealthClient, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if got := spread(client, 10*n, time.Second); len(got) == n && got["error"] == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("backends never all answered")
		}
	}
}

func TestWeightsSetShares(t *testing.T) {
	// Each policy with the parts that weigh more than the weights turned
	// off: slow start (an instance that turns ready after the others is a
	// newcomer) and, for p2c, latency (a loaded machine answers unevenly).
	// The default configuration's shares are the weights scenario's figures.
	for policy, config := range map[string]string{
		balance.Weighted: `{"slowStartWindow":"0s"}`,
		balance.P2CEWMA:  `{"slowStartWindow":"0s","slowFactor":1000}`,
	} {
		t.Run(policy, func(t *testing.T) {
			srv := etcdtest.Start(t)
			startBackends(t, srv, 1, 1, 3)
			client := dialConfig(t, srv, policy, config)
			awaitAll(t, client, 3)
			got := spread(client, 1000, time.Second)
			// Picks are random draws: allow about four standard deviations.
			for id, want := range map[string]int{"b1": 200, "b2": 200, "b3": 600} {
				if d := got[id] - want; d < -70 || d > 70 || got["error"] != 0 {
					t.Errorf("1000 calls spread %v; want about 200/200/600 and no error", got)
					break
				}
			}
		})
	}
}

func TestStalledBackendGetsNoCallsThenComesBack(t *testing.T) {
	for _, policy := range []string{balance.Weighted, balance.P2CEWMA} {
		t.Run(policy, func(t *testing.T) {
			srv := etcdtest.Start(t)
			backends := startBackends(t, srv, 1, 1, 1)
			client := dial(t, srv, policy)
			awaitAll(t, client, 3)

			backends[1].pause()
			// Calls may go to it until its heartbeat is overdue.
			stallSeen := time.Now().Add(time.Second)
			for time.Now().Before(stallSeen) {
				spread(client, 1, 100*time.Millisecond)
			}
			got := spread(client, 300, 500*time.Millisecond)
			if got["b2"] != 0 || got["error"] != 0 {
				t.Errorf("calls after the stall: %v; want none to b2 and no error", got)
			}
			backends[1].unpause()
			deadline := time.Now().Add(5 * time.Second)
			for spread(client, 30, time.Second)["b2"] == 0 {
				if time.Now().After(deadline) {
					t.Fatalf("b2 got no call within 5 s of resuming")
				}
			}
		})
	}
}

// Every instance loses its link to etcd (the client keeps its own): every
// key expires while every instance still serves. Calls go on to the
// instances for the grace period, then stop.
func TestFleetCutOffFromEtcdKeepsServingForTheGracePeriod(t *testing.T) {
	for _, policy := range []string{balance.Weighted, balance.P2CEWMA} {
		t.Run(policy, func(t *testing.T) {
			srv := etcdtest.Start(t)
			proxy := etcdtest.NewProxy(t, srv)
			startBackendsVia(t, proxy.Client(), time.Second, 1, 1, 1)
			client := dialConfig(t, srv, policy, `{"vanishGrace":"3s"}`)
			awaitAll(t, client, 3)

			proxy.Cut()
			awaitKeys(t, srv, 0)
			cutAt := time.Now()
			if got := spread(client, 30, time.Second); got["error"] != 0 {
				t.Fatalf("calls after every key expired: %v; want every instance still called", got)
			}
			if time.Since(cutAt) > 2*time.Second {
				t.Skip("the machine was too slow to call within the grace period")
			}
			// After the grace, the instances are gone (a relist follows within
			// the resolver's 5 s rate limit).
			deadline := time.Now().Add(20 * time.Second)
			for spread(client, 1, 200*time.Millisecond)["error"] == 0 {
				if time.Now().After(deadline) {
					t.Fatal("instances still called 20 s after the grace period began")
				}
				time.Sleep(100 * time.Millisecond) // polling the balancer's state, which has no event to await
			}
		})
	}
}

// A real scale-down (servers stop; their keys go) takes the instances out
// at once, though all go together.
func TestStoppedFleetLeavesAtOnce(t *testing.T) {
	srv := etcdtest.Start(t)
	etcd := srv.Client()
	var stops []func()
	for i := range 3 {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		b := &backend{id: fmt.Sprintf("b%d", i+1), resume: make(chan struct{})}
		s := grpc.NewServer()
		healthpb.RegisterHealthServer(s, b)
		done := make(chan struct{})
		go func() { defer close(done); s.Serve(lis) }()
		reg, err := register.New(etcd, discovery.Instance{Service: "svc", ID: b.id, Addr: lis.Addr().String()}, register.WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			t.Fatal(err)
		}
		// As a stopping process does: stop answering, then deregister.
		stop := sync.OnceFunc(func() { s.Stop(); <-done; reg.Close(context.Background()) })
		t.Cleanup(stop)
		stops = append(stops, stop)
	}
	client := dial(t, srv, balance.P2CEWMA)
	awaitAll(t, client, 3)
	for _, stop := range stops {
		stop()
	}
	awaitKeys(t, srv, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := client.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(false))
	if err == nil || ctx.Err() != nil {
		t.Fatalf("call after the fleet stopped: %v (context %v); want a failure at once", err, ctx.Err())
	}
}

// awaitKeys waits until etcd holds n keys of svc.
func awaitKeys(t *testing.T, srv *etcdtest.Server, n int64) {
	t.Helper()
	c := srv.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	prefix := discovery.Prefix(discovery.DefaultNamespace, "svc")
	resp, err := c.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count == n {
		return
	}
	for wresp := range c.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1)) {
		for _, ev := range wresp.Events {
			if ev.Type == clientv3.EventTypeDelete {
				resp.Count--
			} else if ev.IsCreate() {
				resp.Count++
			}
		}
		if resp.Count == n {
			return
		}
	}
	t.Fatalf("etcd never held %d keys of svc", n)
}
