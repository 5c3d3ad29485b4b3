package liveness_test

import (
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/rollcall/rollcall/pkg/liveness"
)

// A watch over a plain connection reports the status the heartbeats
// carry: SERVING, then NOT_SERVING once the server begins to stop.
func TestWatchConnReportsTheServingStatus(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := health.NewServer()
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, liveness.NewHealthServer(hs, make(chan struct{})))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	defer func() { srv.Stop(); <-served }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	w, stop := liveness.WatchConn(conn)
	defer stop()
	// No event marks a heartbeat's arrival: poll, well within the time
	// of many heartbeats.
	await := func(want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for w.Status() != want {
			if time.Now().After(deadline) {
				t.Fatalf("status %v, want %v", w.Status(), want)
			}
			time.Sleep(liveness.Interval / 4)
		}
	}
	await(healthpb.HealthCheckResponse_SERVING)
	if w.Stalled(liveness.Now()) {
		t.Error("stalled while heartbeats come")
	}
	hs.Shutdown() // as serve does when it begins to stop
	await(healthpb.HealthCheckResponse_NOT_SERVING)
}
