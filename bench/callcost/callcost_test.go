// Package callcost measures what a call through rollcall's discovery and
// balancing costs, for the greeter's idempotent SayHello (with its
// retries, hedging and stall handling armed) as the throughput scenario
// calls it: beside a direct connection and a plain gRPC round_robin
// connection through the same etcd resolver, to one instance and to three.
package callcost

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	greeterv1 "github.com/rollcall/rollcall/api/greeter/v1"
	"github.com/rollcall/rollcall/pkg/call"
	"github.com/rollcall/rollcall/pkg/discovery/resolve"
	"github.com/rollcall/rollcall/pkg/etcdtest"
	"github.com/rollcall/rollcall/pkg/serve"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type greeter struct {
	greeterv1.UnimplementedGreeterServiceServer
	id string
}

func (g greeter) SayHello(_ context.Context, req *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error) {
	return &greeterv1.SayHelloResponse{Message: "hello " + req.GetName(), InstanceId: g.id}, nil
}

// startGreeter serves a greeter as services serve it: health, heartbeat,
// registration.
func startGreeter(b *testing.B, srv *etcdtest.Server, id string) string {
	b.Helper()
	s, err := serve.New(serve.Config{Listen: "127.0.0.1:0", Service: "greeter", ID: id, DrainDelay: -1, StopTimeout: time.Second},
		srv.Client(), serve.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		b.Fatal(err)
	}
	greeterv1.RegisterGreeterServiceServer(s, greeter{id: id})
	ctx, stop := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- s.Run(ctx) }()
	b.Cleanup(func() { stop(); <-ran })
	return s.Instance().Addr
}

func BenchmarkSayHello(b *testing.B) {
	for _, instances := range []int{1, 3} {
		b.Run(fmt.Sprintf("instances=%d", instances), func(b *testing.B) {
			srv := etcdtest.Start(b)
			var addr string
			for i := range instances {
				addr = startGreeter(b, srv, fmt.Sprintf("g%d", i+1))
			}
			rb, err := resolve.NewBuilder(srv.Client(), resolve.WithLogger(slog.New(slog.DiscardHandler)))
			if err != nil {
				b.Fatal(err)
			}
			conns := []struct {
				name string
				dial func() (*grpc.ClientConn, error)
			}{
				{"rollcall", func() (*grpc.ClientConn, error) { return call.Dial(rb, "greeter") }},
				{"round_robin", func() (*grpc.ClientConn, error) {
					return grpc.NewClient(rb.Target("greeter"), grpc.WithResolvers(rb),
						grpc.WithTransportCredentials(insecure.NewCredentials()),
						grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`))
				}},
			}
			if instances == 1 {
				conns = append(conns, struct {
					name string
					dial func() (*grpc.ClientConn, error)
				}{"direct", func() (*grpc.ClientConn, error) {
					return grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
				}})
			}
			for _, bc := range conns {
				conn, err := bc.dial()
				if err != nil {
					b.Fatal(err)
				}
				b.Run(bc.name, func(b *testing.B) { callParallel(b, greeterv1.NewGreeterServiceClient(conn), instances) })
				conn.Close()
			}
		})
	}
}

// callParallel calls SayHello from 16 goroutines per core, each call with
// a 1 s deadline, once every instance has answered.
func callParallel(b *testing.B, client greeterv1.GreeterServiceClient, instances int) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	seen := map[string]bool{}
	for len(seen) < instances {
		resp, err := client.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "bench"}, grpc.WaitForReady(true))
		if err != nil {
			b.Fatal(err)
		}
		seen[resp.GetInstanceId()] = true
	}
	b.ReportAllocs()
	b.SetParallelism(16)
	b.ResetTimer()
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
}
