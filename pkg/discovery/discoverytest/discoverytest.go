// Package discoverytest holds what tests of discovery need again and
// again: etcd with auth on, backends serving gRPC's health service on 127.0.0.1, kept
// registered in etcd, a recorder of the lists a resolver publishes, and
// channels dialed through the resolver. Tests of this workspace use it,
// and so can tests of services copied from it. Everything it starts stops
// when the test ends.
package discoverytest

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/discovery/register"
	"github.com/rollcall/rollcall/pkg/discovery/resolve"
)

// InstanceHeader is the response header in which a Backend names itself.
const InstanceHeader = "instance-id"

// Serve serves health on a gRPC server on 127.0.0.1 until the test ends,
// and returns its address.
func Serve(tb testing.TB, health healthpb.HealthServer) string {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, health)
	done := make(chan struct{})
	go func() { defer close(done); s.Serve(lis) }()
	tb.Cleanup(func() { s.Stop(); <-done })
	return lis.Addr().String()
}

// Backend is a gRPC server on 127.0.0.1 whose health Check answers
// SERVING with its ID in the InstanceHeader, so that a test sees which
// instance served a call.
type Backend struct {
	healthpb.UnimplementedHealthServer
	ID, Addr string
}

// StartBackend serves a Backend with id until the test ends.
func StartBackend(tb testing.TB, id string) *Backend {
	tb.Helper()
	b := &Backend{ID: id}
	b.Addr = Serve(tb, b)
	return b
}

// Check answers SERVING, naming b in the InstanceHeader.
func (b *Backend) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	grpc.SetHeader(ctx, metadata.Pairs(InstanceHeader, b.ID))
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

// Instance is b as an instance of service.
func (b *Backend) Instance(service string) discovery.Instance {
	return discovery.Instance{Service: service, ID: b.ID, Addr: b.Addr}
}

// Register keeps inst registered in etcd until the test ends, or until
// Deregister. It does not wait for the key to be written.
func Register(tb testing.TB, etcd *clientv3.Client, inst discovery.Instance, opts ...register.Option) *register.Registration {
	tb.Helper()
	r, err := register.New(etcd, inst, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		// Bounded: etcd may be down or cut off when the test ends.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		r.Close(ctx)
	})
	return r
}

// Deregister closes r, deleting its key, within 5 s.
func Deregister(tb testing.TB, r *register.Registration) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.Close(ctx); err != nil {
		tb.Errorf("deregister %s: %v", r.Key(), err)
	}
}

// AwaitState waits, up to 20 s, until r's state satisfies ok, and returns
// that state; what names ok in the failure.
func AwaitState(tb testing.TB, r *register.Registration, what string, ok func(register.State) bool) register.State {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := awaitState(ctx, r, ok)
	if err != nil {
		tb.Fatalf("registration never became %s; last state %+v", what, s)
	}
	return s
}

// AwaitRegistered waits until r's key is written, or ctx ends: for
// examples, which have no testing.TB.
func AwaitRegistered(ctx context.Context, r *register.Registration) error {
	_, err := awaitState(ctx, r, Registered)
	return err
}

// Registered reports whether a registration's key is written.
func Registered(s register.State) bool { return s.Phase == register.Registered }

func awaitState(ctx context.Context, r *register.Registration, ok func(register.State) bool) (register.State, error) {
	for {
		s, changed := r.Watch()
		if ok(s) {
			return s, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return s, ctx.Err()
		}
	}
}

// RoundRobin is a service config with gRPC's round_robin policy.
const RoundRobin = `{"loadBalancingConfig":[{"round_robin":{}}]}`

// Dial dials service through b with serviceConfig (RoundRobin when
// empty), without TLS, and builds the resolver at once rather than at
// the first call. Calls that fail for want of instances say so, naming
// the service. The channel closes when the test ends.
func Dial(tb testing.TB, b *resolve.Builder, service, serviceConfig string) *grpc.ClientConn {
	tb.Helper()
	if serviceConfig == "" {
		serviceConfig = RoundRobin
	}
	cc, err := grpc.NewClient(b.Target(service),
		grpc.WithResolvers(b),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(serviceConfig),
		grpc.WithChainUnaryInterceptor(b.UnaryClientInterceptor()),
	)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cc.Close() })
	cc.Connect()
	return cc
}

// Call makes one health Check on cc, within timeout, and returns the ID
// of the Backend that answered it.
func Call(ctx context.Context, cc grpc.ClientConnInterface, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var header metadata.MD
	_, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&header))
	if err != nil {
		return "", err
	}
	return strings.Join(header.Get(InstanceHeader), ""), nil
}
