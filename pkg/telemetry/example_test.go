package telemetry_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/rollcall/rollcall/pkg/telemetry"
)

// A server and a client with telemetry's options count their calls, and
// the counts are on /metrics of the metrics port. (A rollcall service
// passes the same options to serve.New and call.Dial.)
func Example() {
	tel, cleanup, err := telemetry.New(telemetry.Config{MetricsListen: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
	if err != nil {
		panic(err)
	}
	defer cleanup()

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	srv := grpc.NewServer(tel.ServerOptions()...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(lis) }()
	defer func() { srv.Stop(); <-served }()

	conn, err := grpc.NewClient(lis.Addr().String(),
		append(tel.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	if _, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		panic(err)
	}

	resp, err := http.Get("http://" + tel.MetricsAddr() + "/metrics")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "grpc_client_handled_total") || strings.HasPrefix(line, "grpc_server_handled_total") {
			fmt.Println(line)
		}
	}
	// Output:
	// grpc_client_handled_total{grpc_code="OK",grpc_method="Check",grpc_service="grpc.health.v1.Health",grpc_type="unary"} 1
	// grpc_server_handled_total{grpc_code="OK",grpc_method="Check",grpc_service="grpc.health.v1.Health",grpc_type="unary"} 1
}
