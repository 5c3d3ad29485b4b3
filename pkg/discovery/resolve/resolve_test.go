package resolve_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	etcdnaming "go.etcd.io/etcd/client/v3/naming/resolver"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/discovery/discoverytest"
	"github.com/rollcall/rollcall/pkg/discovery/register"
	"github.com/rollcall/rollcall/pkg/discovery/resolve"
	"github.com/rollcall/rollcall/pkg/etcdtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// start starts etcd, with a client of it and a recorder for the lists of
// Builders of newBuilder.
func start(t *testing.T) (*etcdtest.Server, *clientv3.Client, *discoverytest.Lists) {
	t.Helper()
	srv := etcdtest.Start(t)
	return srv, srv.Client(), discoverytest.NewLists()
}

// registerBackend keeps a backend named id registered as an instance of
// service until the test ends.
func registerBackend(t *testing.T, c *clientv3.Client, service, id string) *register.Registration {
	t.Helper()
	return discoverytest.Register(t, c, discoverytest.StartBackend(t, id).Instance(service))
}

func newBuilder(t *testing.T, c *clientv3.Client, l *discoverytest.Lists, opts ...resolve.Option) *resolve.Builder {
	t.Helper()
	b, err := resolve.NewBuilder(c, append([]resolve.Option{resolve.WithObserver(l.Observer())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func dial(t *testing.T, b *resolve.Builder, service string) *grpc.ClientConn {
	t.Helper()
	return discoverytest.Dial(t, b, service, "")
}

// dialAndAwait dials greeter through b, and waits until l's latest list
// of it is ids and calls reach each of them.
func dialAndAwait(t *testing.T, b *resolve.Builder, l *discoverytest.Lists, ids ...string) *grpc.ClientConn {
	t.Helper()
	cc := dial(t, b, "greeter")
	awaitList(t, l, cc, ids...)
	return cc
}

// awaitList waits until l's latest list of greeter is ids and calls on cc
// reach each of them.
func awaitList(t *testing.T, l *discoverytest.Lists, cc *grpc.ClientConn, ids ...string) {
	t.Helper()
	l.Await(t, "greeter", ids...)
	awaitSpread(t, cc, ids...)
}

// call makes one call and returns the ID of the instance that served it.
func call(ctx context.Context, cc *grpc.ClientConn) (string, error) {
	return discoverytest.Call(ctx, cc, 5*time.Second)
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
	_, c, l := start(t)
	for _, id := range []string{"a", "b", "c"} {
		registerBackend(t, c, "greeter", id)
	}
	cc := dialAndAwait(t, newBuilder(t, c, l), l, "a", "b", "c")

	got := spread(t, cc, 30)
	for _, id := range []string{"a", "b", "c"} {
		if got[id] != 10 {
			t.Errorf("30 calls spread %v, want 10 per instance", got)
			break
		}
	}
}

func TestListFollowsRegistrations(t *testing.T) {
	_, c, l := start(t)
	ra := registerBackend(t, c, "greeter", "a")
	cc := dialAndAwait(t, newBuilder(t, c, l), l, "a")

	registerBackend(t, c, "greeter", "b")
	awaitList(t, l, cc, "a", "b")

	discoverytest.Deregister(t, ra) // deregister: the key goes with the lease
	awaitList(t, l, cc, "b")

	// A lease that expires takes its key, and the instance, with it.
	lease, err := c.Grant(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	value, _ := discovery.Encode(discovery.Instance{Service: "greeter", ID: "short-lived", Addr: "127.0.0.1:1"})
	if _, err := c.Put(context.Background(), "rollcall/greeter/short-lived", string(value), clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	l.Await(t, "greeter", "b", "short-lived")
	l.Await(t, "greeter", "b")
}

func TestEmptyListFailsFastNamingTheService(t *testing.T) {
	_, c, l := start(t)
	r := registerBackend(t, c, "greeter", "a")
	cc := dialAndAwait(t, newBuilder(t, c, l), l, "a")

	discoverytest.Deregister(t, r)
	l.Await(t, "greeter")
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
	_, c, l := start(t)
	registerBackend(t, c, "hello", "h")
	registerBackend(t, c, "helloworld", "hw")
	b := newBuilder(t, c, l)
	dial(t, b, "helloworld")
	cc := dial(t, b, "hello")
	l.Await(t, "hello", "h")
	l.Await(t, "helloworld", "hw")
	awaitSpread(t, cc, "h")
	if got := spread(t, cc, 6); got["h"] != 6 {
		t.Errorf("calls to hello reached %v, want only h", got)
	}
}

func TestInvalidValuesAreSkippedNotFatal(t *testing.T) {
	_, c, l := start(t)
	registerBackend(t, c, "greeter", "good")
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
	l.Await(t, "greeter", "good", "wrong-metadata")
	awaitOK(t, cc)

	// A valid instance whose value turns bad is dropped; others stay.
	if _, err := c.Put(context.Background(), "rollcall/greeter/wrong-metadata", "{"); err != nil {
		t.Fatal(err)
	}
	l.Await(t, "greeter", "good")
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
	_, c, l := start(t)
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
	l.Await(t, "big", want...)
}

// etcd's own resolver reads what rollcall writes.
func TestEtcdNamingResolverReadsRegistrations(t *testing.T) {
	srv := etcdtest.Start(t)
	c := srv.Client()
	for _, id := range []string{"a", "b"} {
		registerBackend(t, c, "greeter", id)
	}
	etcdBuilder, err := etcdnaming.NewBuilder(c)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("etcd:///rollcall/greeter",
		grpc.WithResolvers(etcdBuilder),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(discoverytest.RoundRobin))
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
	b := newBuilder(t, srv.Client(), discoverytest.NewLists())
	cc := dial(t, b, "a/b")
	_, err := call(context.Background(), cc)
	if err == nil || !strings.Contains(err.Error(), `invalid service name "a/b"`) {
		t.Errorf("call to etcd:///a/b = %v, want an error naming the service", err)
	}
}
