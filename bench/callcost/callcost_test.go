// Package callcost measures what a call through rollcall's discovery and
// balancing costs over a direct connection, for an idempotent method (with
// retries and per-attempt timeouts) as the throughput scenario calls.
package callcost

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"go.uber.org/goleak"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	greeterv1 "github.com/rollcall/rollcall/api/greeter/v1"
	"github.com/rollcall/rollcall/pkg/call"
	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/discovery/register"
	"github.com/rollcall/rollcall/pkg/discovery/resolve"
	"github.com/rollcall/rollcall/pkg/etcdtest"
	"github.com/rollcall/rollcall/pkg/serve"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, etcdtest.IgnoredGoroutines()...)
}

type greeter struct {
	greeterv1.UnimplementedGreeterServiceServer
}

func (greeter) SayHello(_ context.Context, req *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error) {
	return &greeterv1.SayHelloResponse{Message: "hello " + req.GetName(), InstanceId: "g1"}, nil
}

func BenchmarkSayHello(b *testing.B) {
	srv := etcdtest.Start(b)
	// The greeter served as services serve it: health, heartbeat,
	// registration.
	quiet := slog.New(slog.DiscardHandler)
	s, err := serve.New(serve.Config{Listen: "127.0.0.1:0", Service: "greeter", ID: "g1", Namespace: discovery.DefaultNamespace,
		TTL: register.DefaultTTL, StopTimeout: time.Second}, srv.Client(), quiet)
	if err != nil {
		b.Fatal(err)
	}
	greeterv1.RegisterGreeterServiceServer(s, greeter{})
	ctx, stop := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- s.Run(ctx) }()
	defer func() { stop(); <-ran }()
	rb, err := resolve.NewBuilder(srv.Client(), resolve.WithLogger(quiet))
	if err != nil {
		b.Fatal(err)
	}
	direct, err := grpc.NewClient("passthrough:///"+s.Instance().Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer direct.Close()
	via, err := call.Dial(rb, "greeter")
	if err != nil {
		b.Fatal(err)
	}
	defer via.Close()
	for _, bc := range []struct {
		name string
		conn *grpc.ClientConn
	}{{"direct", direct}, {"rollcall", via}} {
		b.Run(bc.name, func(b *testing.B) {
			client := greeterv1.NewGreeterServiceClient(bc.conn)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if _, err := client.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "bench"}, grpc.WaitForReady(true)); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					cctx, ccancel := context.WithTimeout(ctx, time.Second)
					_, err := client.SayHello(cctx, &greeterv1.SayHelloRequest{Name: "bench"})
					ccancel()
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
