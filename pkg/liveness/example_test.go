package liveness_test

import (
	"context"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/rollcall/rollcall/pkg/liveness"
)

// A server registers the health service with the heartbeat; a watch of
// liveness.Service then gets its status every liveness.Interval, until
// the server stops.
func Example() {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	stopping := make(chan struct{})
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, liveness.NewHealthServer(health.NewServer(), stopping))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	defer func() { srv.Stop(); <-served }()

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{Service: liveness.Service})
	if err != nil {
		fmt.Println(err)
		return
	}
	for range 3 {
		resp, err := stream.Recv()
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println("heartbeat:", resp.GetStatus())
	}
	close(stopping) // as when a graceful stop begins
	for {
		if _, err := stream.Recv(); err != nil {
			fmt.Println("heartbeats end:", err)
			return
		}
	}
	// Output:
	// heartbeat: SERVING
	// heartbeat: SERVING
	// heartbeat: SERVING
	// heartbeats end: EOF
}
