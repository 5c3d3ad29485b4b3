package controlplane

import (
	"context"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"

	"github.com/rollcall/rollcall/pkg/call"
	"github.com/rollcall/rollcall/pkg/call/callxds"
	"github.com/rollcall/rollcall/pkg/discovery/discoverytest"
	"github.com/rollcall/rollcall/pkg/discovery/register"
	"github.com/rollcall/rollcall/pkg/discovery/resolve"
	"github.com/rollcall/rollcall/pkg/etcdtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// stack is etcd, a control plane reading it and serving ADS on
// 127.0.0.1, and the bootstrap that names it.
type stack struct {
	etcd      *etcdtest.Server
	client    *clientv3.Client
	cp        *ControlPlane
	addr      string
	stop      func() // stops the control plane's server and the control plane
	bootstrap []byte
}

func startStack(t *testing.T, cfg Config) *stack {
	t.Helper()
	srv := etcdtest.Start(t)
	s := &stack{etcd: srv, client: srv.Client()}
	s.cp, s.addr, s.stop = serveControlPlane(t, s.client, cfg)
	var err error
	s.bootstrap, err = callxds.Bootstrap("test", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// serveControlPlane starts a control plane that reads etcd through
// client and serves ADS on 127.0.0.1, until stop (once) or the test's
// end.
func serveControlPlane(t *testing.T, client *clientv3.Client, cfg Config) (cp *ControlPlane, addr string, stop func()) {
	t.Helper()
	rb, err := resolve.NewBuilder(client)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Defaults.Policy == "" {
		cfg.Defaults = Defaults{Policy: RoundRobin, RetryMethods: call.IdempotentMethods()}
	}
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	cp, err = New(rb, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	cp.Register(gs)
	served := make(chan struct{})
	go func() { defer close(served); gs.Serve(lis) }()
	var once sync.Once
	stop = func() { once.Do(func() { gs.Stop(); <-served; cp.Close() }) }
	t.Cleanup(stop)
	return cp, lis.Addr().String(), stop
}

func (s *stack) register(t *testing.T, id string) *register.Registration {
	t.Helper()
	return discoverytest.Register(t, s.client, discoverytest.StartBackend(t, id).Instance("greeter"))
}

func (s *stack) dial(t *testing.T) *grpc.ClientConn {
	t.Helper()
	cc, err := callxds.Dial("greeter", callxds.WithBootstrap(s.bootstrap))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// awaitServers calls through cc until the last calls, two rounds of
// len(ids), came from exactly ids; it fails on any failed call once the
// first has succeeded.
func awaitServers(t *testing.T, cc *grpc.ClientConn, ids ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	want := slices.Sorted(slices.Values(ids))
	var recent []string
	succeeded := false
	for ctx.Err() == nil {
		id, err := discoverytest.Call(ctx, cc, 5*time.Second)
		if err != nil {
			if succeeded {
				t.Fatalf("call failed after calls succeeded: %v", err)
			}
			continue
		}
		succeeded = true
		recent = append(recent, id)
		if len(recent) > 2*len(ids) {
			recent = recent[1:]
		}
		if got := slices.Compact(slices.Sorted(slices.Values(recent))); len(recent) == 2*len(ids) && slices.Equal(got, want) {
			return
		}
	}
	t.Fatalf("calls through xDS went to %v, want each of %v", recent, want)
}

// sizes records how many endpoints each snapshot served, from the first
// that served any.
type sizes struct {
	mu sync.Mutex
	n  []int
}

func (s *sizes) record(_ string, instances int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if instances > 0 || len(s.n) > 0 {
		s.n = append(s.n, instances)
	}
}

func (s *sizes) sizes() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.n)
}

// endpoints returns the addresses the control plane serves for service,
// or nil when it serves none.
func (s *stack) endpoints(t *testing.T, service string) []string {
	t.Helper()
	snap, err := s.cp.cache.GetSnapshot("")
	if err != nil {
		return nil
	}
	cla, ok := snap.GetResources(resourcev3.EndpointType)[service].(*endpoint.ClusterLoadAssignment)
	if !ok {
		return nil
	}
	var addrs []string
	for _, loc := range cla.Endpoints {
		for _, ep := range loc.LbEndpoints {
			addrs = append(addrs, ep.GetEndpoint().GetAddress().GetSocketAddress().GetAddress())
		}
	}
	return addrs
}

// A client whose bootstrap names two control planes and that starts while
// the first is down gets everything from the second (gRFC A71). A client
// already running when its control plane goes away keeps what it
// received and waits for that one to come back, as xds-cp-restart in
// docs/benchmarks.md measures: grpc-go (v1.85) moves to the next control
// plane only for resources it has never received.
func TestClientStartingWhileTheFirstControlPlaneIsDownUsesTheNext(t *testing.T) {
	s := startStack(t, Config{})
	_, second, _ := serveControlPlane(t, s.client, Config{})
	s.register(t, "a")
	s.register(t, "b")
	s.stop()
	bootstrap, err := callxds.Bootstrap("test", s.addr, second)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := callxds.Dial("greeter", callxds.WithBootstrap(bootstrap))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	awaitServers(t, cc, "a", "b")
}

// A gRPC client that knows only the control plane's address spreads its
// calls over the registered instances, and follows them as they come and
// go. The control plane follows greeter from the client's first request.
func TestCallsFollowTheRegisteredInstances(t *testing.T) {
	s := startStack(t, Config{})
	ra := s.register(t, "a")
	s.register(t, "b")
	s.register(t, "c")
	cc := s.dial(t)
	awaitServers(t, cc, "a", "b", "c")

	s.register(t, "d")
	awaitServers(t, cc, "a", "b", "c", "d")
	discoverytest.Deregister(t, ra)
	awaitServers(t, cc, "b", "c", "d")
}

// While etcd is down, the control plane keeps serving the last list: the
// clients it has keep calling every instance, one that connects meanwhile
// gets the list too, and no snapshot lost an endpoint. Once etcd is back
// it follows again.
func TestEtcdDownKeepsTheLastSnapshot(t *testing.T) {
	s := startStack(t, Config{Services: []string{"greeter"}})
	s.register(t, "a")
	s.register(t, "b")
	cc := s.dial(t)
	awaitServers(t, cc, "a", "b")
	before, _ := s.cp.Updates()

	s.etcd.Stop()
	awaitServers(t, cc, "a", "b")
	awaitServers(t, s.dial(t), "a", "b")
	if n := len(s.endpoints(t, "greeter")); n != 2 {
		t.Errorf("with etcd down the control plane serves %d endpoints, want the last 2", n)
	}
	if after, _ := s.cp.Updates(); after != before {
		t.Errorf("the snapshot changed %d times while etcd was down, want 0", after-before)
	}

	s.etcd.Start()
	s.register(t, "c")
	awaitServers(t, cc, "a", "b", "c")
}

// An etcd that comes back wiped has none of the keys: the control plane
// keeps the instances it knew while they register again, and never
// serves an empty cluster meanwhile.
func TestEtcdWipedNeverEmptiesTheCluster(t *testing.T) {
	served := &sizes{}
	s := startStack(t, Config{Services: []string{"greeter"}, served: served.record})
	s.register(t, "a")
	s.register(t, "b")
	cc := s.dial(t)
	awaitServers(t, cc, "a", "b")

	s.etcd.Wipe()
	s.register(t, "c")
	awaitServers(t, cc, "a", "b", "c")
	for i, n := range served.sizes() {
		if n == 0 {
			t.Errorf("snapshot %d of %v served an empty cluster", i, served.sizes())
		}
	}
}
