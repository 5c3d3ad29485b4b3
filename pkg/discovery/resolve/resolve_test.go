package resolve_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	etcdnaming "go.etcd.io/etcd/client/v3/naming/resolver"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/discovery/register"
	"github.com/rollcall/rollcall/pkg/discovery/resolve"
	"github.com/rollcall/rollcall/pkg/etcdtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, etcdtest.IgnoredGoroutines()...)
}

// backend is a real gRPC server on 127.0.0.1 whose health Check answers
// with its ID in a header, so a test sees which instance served a call.
type backend struct {
	healthpb.UnimplementedHealthServer
	id   string
	addr string
}

func (b *backend) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	grpc.SetHeader(ctx, metadata.Pairs("instance-id", b.id))
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func startBackend(t *testing.T, id string) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{id: id, addr: ln.Addr().String()}
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, b)
	done := make(chan struct{})
	go func() { defer close(done); s.Serve(ln) }()
	t.Cleanup(func() { s.Stop(); <-done })
	return b
}

// register keeps b registered as an instance of service until the test ends.
func registerBackend(t *testing.T, c *clientv3.Client, service string, b *backend) *register.Registration {
	t.Helper()
	r, err := register.New(c, discovery.Instance{Service: service, ID: b.id, Addr: b.addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeRegistration(t, r) })
	return r
}

func closeRegistration(t *testing.T, r *register.Registration) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r.Close(ctx)
}

// lists records every list the resolver publishes, so tests await the
// list they expect instead of sleeping.
type lists struct {
	mu      sync.Mutex
	seen    map[string][][]string // service -> lists of IDs, in order
	changed chan struct{}
}

func newLists() *lists { return &lists{seen: map[string][][]string{}, changed: make(chan struct{})} }

func (l *lists) record(service string, instances []discovery.Instance) {
	ids := make([]string, len(instances))
	for i, inst := range instances {
		ids[i] = inst.ID
	}
	l.mu.Lock()
	l.seen[service] = append(l.seen[service], ids)
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

// await waits until the latest list of service has exactly ids, in order.
func (l *lists) await(t *testing.T, service string, ids ...string) {
	t.Helper()
	want := strings.Join(ids, ",")
	timeout := time.After(20 * time.Second)
	for {
		l.mu.Lock()
		var got string
		if all := l.seen[service]; len(all) > 0 {
			got = strings.Join(all[len(all)-1], ",")
		}
		changed := l.changed
		l.mu.Unlock()
		if got == want && (len(ids) > 0 || len(l.history(service)) > 0) {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("list of %s never became [%s]; last [%s]", service, want, got)
		}
	}
}

func (l *lists) history(service string) [][]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([][]string(nil), l.seen[service]...)
}

func newBuilder(t *testing.T, c *clientv3.Client, l *lists, opts ...resolve.Option) *resolve.Builder {
	t.Helper()
	b, err := resolve.NewBuilder(c, append([]resolve.Option{resolve.WithOnUpdate(l.record)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const roundRobin = `{"loadBalancingConfig":[{"round_robin":{}}]}`

func dial(t *testing.T, b *resolve.Builder, service string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(b.Target(service),
		grpc.WithResolvers(b),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(roundRobin),
		grpc.WithChainUnaryInterceptor(b.UnaryClientInterceptor()),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	cc.Connect() // build the resolver now, not at the first call
	return cc
}

// call makes one call and returns the ID of the instance that served it.
func call(ctx context.Context, cc *grpc.ClientConn) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var header metadata.MD
	_, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&header))
	if err != nil {
		return "", err
	}
	return strings.Join(header.Get("instance-id"), ""), nil
}

// spread makes n calls and counts them per serving instance.
func spread(t *testing.T, cc *grpc.ClientConn, n int) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for range n {
		id, err := call(context.Background(), cc)
		if err != nil {
			t.Fatalf("call: %v", err)
		}
		counts[id]++
	}
	return counts
}

// awaitSpread makes calls until they reach exactly the ids, as the channel
// catches up with a list the resolver already published.
func awaitSpread(t *testing.T, cc *grpc.ClientConn, ids ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := map[string]int{}
		var err error
		for range 3 * len(ids) {
			var id string
			if id, err = call(context.Background(), cc); err != nil {
				break
			}
			got[id]++
		}
		if err == nil && len(got) == len(ids) && allIn(got, ids) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("calls reached %v (last error %v), want exactly %v", got, err, ids)
		}
	}
}

func allIn(got map[string]int, ids []string) bool {
	for _, id := range ids {
		if got[id] == 0 {
			return false
		}
	}
	return true
}

func TestRoundRobinReachesEveryInstance(t *testing.T) {
	srv := etcdtest.Start(t)
	c := srv.Client()
	l := newLists()
	for _, id := range []string{"a", "b", "c"} {
		registerBackend(t, c, "greeter", startBackend(t, id))
	}
	cc := dial(t, newBuilder(t, c, l), "greeter")
	l.await(t, "greeter", "a", "b", "c")
	awaitSpread(t, cc, "a", "b", "c")

	got := spread(t, cc, 30)
	for _, id := range []string{"a", "b", "c"} {
		if got[id] != 10 {
			t.Errorf("30 calls spread %v, want 10 per instance", got)
			break
		}
	}
}

func TestListFollowsRegistrations(t *testing.T) {
	srv := etcdtest.Start(t)
	c := srv.Client()
	l := newLists()
	ra := registerBackend(t, c, "greeter", startBackend(t, "a"))
	cc := dial(t, newBuilder(t, c, l), "greeter")
	l.await(t, "greeter", "a")
	awaitSpread(t, cc, "a")

	registerBackend(t, c, "greeter", startBackend(t, "b"))
	l.await(t, "greeter", "a", "b")
	awaitSpread(t, cc, "a", "b")

	closeRegistration(t, ra) // deregister: the key goes with the lease
	l.await(t, "greeter", "b")
	awaitSpread(t, cc, "b")

	// A lease that expires takes its key, and the instance, with it.
	lease, err := c.Grant(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	value, _ := discovery.Encode(discovery.Instance{Service: "greeter", ID: "short-lived", Addr: "127.0.0.1:1"})
	if _, err := c.Put(context.Background(), "rollcall/greeter/short-lived", string(value), clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	l.await(t, "greeter", "b", "short-lived")
	l.await(t, "greeter", "b")
}

func TestEmptyListFailsFastNamingTheService(t *testing.T) {
	srv := etcdtest.Start(t)
	c := srv.Client()
	l := newLists()
	r := registerBackend(t, c, "greeter", startBackend(t, "a"))
	cc := dial(t, newBuilder(t, c, l), "greeter")
	l.await(t, "greeter", "a")
	awaitSpread(t, cc, "a")

	closeRegistration(t, r)
	l.await(t, "greeter")
	start := time.Now()
	_, err := call(context.Background(), cc)
	for err == nil && time.Since(start) < 10*time.Second { // the channel catches up with the list
		_, err = call(context.Background(), cc)
	}
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), `no instance of service "greeter" is registered`) {
		t.Fatalf("call with no instances = %v, want UNAVAILABLE naming the service", err)
	}
	start = time.Now()
	if _, err := call(context.Background(), cc); time.Since(start) > time.Second {
		t.Errorf("call with no instances took %v (err %v), want it to fail fast", time.Since(start), err)
	}
}

func TestPrefixOfAnotherServiceIsNotRead(t *testing.T) {
	srv := etcdtest.Start(t)
	c := srv.Client()
	l := newLists()
	registerBackend(t, c, "hello", startBackend(t, "h"))
	registerBackend(t, c, "helloworld", startBackend(t, "hw"))
	b := newBuilder(t, c, l)
	dial(t, b, "helloworld")
	cc := dial(t, b, "hello")
	l.await(t, "hello", "h")
	l.await(t, "helloworld", "hw")
	awaitSpread(t, cc, "h")
	if got := spread(t, cc, 6); got["h"] != 6 {
		t.Errorf("calls to hello reached %v, want only h", got)
	}
}

func TestInvalidValuesAreSkippedNotFatal(t *testing.T) {
	srv := etcdtest.Start(t)
	c := srv.Client()
	l := newLists()
	registerBackend(t, c, "greeter", startBackend(t, "good"))
	bad := map[string]string{
		"not-json":       "hello",
		"empty":          "",
		"no-addr":        `{"Op":0,"Addr":""}`,
		"no-port":        `{"Op":0,"Addr":"somehost"}`,
		"wildcard":       `{"Op":0,"Addr":"0.0.0.0:80"}`,
		"delete-op":      `{"Op":1,"Addr":"127.0.0.1:80"}`,
		"oversize":       `{"Op":0,"Addr":"127.0.0.1:80","Metadata":{"labels":{"x":"` + strings.Repeat("x", discovery.MaxValueBytes) + `"}}}`,
		"nested/id":      `{"Op":0,"Addr":"127.0.0.1:80"}`,
		"wrong-metadata": "", // replaced below: valid address, foreign metadata, kept
	}
	for id, v := range bad {
		if id == "wrong-metadata" {
			continue
		}
		if _, err := c.Put(context.Background(), "rollcall/greeter/"+id, v); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Put(context.Background(), "rollcall/greeter/wrong-metadata", `{"Op":0,"Addr":"127.0.0.2:9","Metadata":"v1"}`); err != nil {
		t.Fatal(err)
	}
	cc := dial(t, newBuilder(t, c, l), "greeter")
	l.await(t, "greeter", "good", "wrong-metadata")
	awaitOK(t, cc)

	// A valid instance whose value turns bad is dropped; others stay.
	if _, err := c.Put(context.Background(), "rollcall/greeter/wrong-metadata", "{"); err != nil {
		t.Fatal(err)
	}
	l.await(t, "greeter", "good")
}

func awaitOK(t *testing.T, cc *grpc.ClientConn) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := call(context.Background(), cc); err == nil {
			return
		} else if time.Now().After(deadline) {
			t.Fatalf("calls still fail: %v", err)
		}
	}
}

func TestThousandInstancesAtOnce(t *testing.T) {
	srv := etcdtest.Start(t)
	c := srv.Client()
	l := newLists()
	want := make([]string, 1000)
	ops := make([]clientv3.Op, 0, 100)
	for i := range want {
		want[i] = fmt.Sprintf("i%04d", i)
		v, err := discovery.Encode(discovery.Instance{Service: "big", ID: want[i], Addr: fmt.Sprintf("127.0.%d.%d:9", i/250, i%250+1)})
		if err != nil {
			t.Fatal(err)
		}
		ops = append(ops, clientv3.OpPut("rollcall/big/"+want[i], string(v)))
		if len(ops) == cap(ops) {
			if _, err := c.Txn(context.Background()).Then(ops...).Commit(); err != nil {
				t.Fatal(err)
			}
			ops = ops[:0]
		}
	}
	dial(t, newBuilder(t, c, l), "big")
	l.await(t, "big", want...)
}

// etcd's own resolver reads what rollcall writes.
func TestEtcdNamingResolverReadsRegistrations(t *testing.T) {
	srv := etcdtest.Start(t)
	c := srv.Client()
	for _, id := range []string{"a", "b"} {
		registerBackend(t, c, "greeter", startBackend(t, id))
	}
	etcdBuilder, err := etcdnaming.NewBuilder(c)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("etcd:///rollcall/greeter",
		grpc.WithResolvers(etcdBuilder),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(roundRobin))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	awaitSpread(t, cc, "a", "b")
}

func TestNewBuilderRejectsBadInput(t *testing.T) {
	srv := etcdtest.Start(t)
	c := srv.Client()
	tests := []struct {
		name    string
		opts    []resolve.Option
		wantErr string
	}{
		{"underscore scheme", []resolve.Option{resolve.WithScheme("etcdv3_resolver")}, `invalid resolver scheme "etcdv3_resolver"`},
		{"upper-case scheme", []resolve.Option{resolve.WithScheme("Etcd")}, `invalid resolver scheme "Etcd"`},
		{"bad namespace", []resolve.Option{resolve.WithNamespace("a//b")}, `invalid namespace "a//b"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := resolve.NewBuilder(c, tt.opts...)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("NewBuilder error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestBadServiceNameFailsCallsNamingIt(t *testing.T) {
	srv := etcdtest.Start(t)
	b := newBuilder(t, srv.Client(), newLists())
	cc := dial(t, b, "a/b")
	_, err := call(context.Background(), cc)
	if err == nil || !strings.Contains(err.Error(), `invalid service name "a/b"`) {
		t.Errorf("call to etcd:///a/b = %v, want an error naming the service", err)
	}
}
