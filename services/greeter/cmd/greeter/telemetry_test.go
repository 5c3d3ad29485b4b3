package main_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	greeterv1 "github.com/rollcall/rollcall/api/greeter/v1"
	"github.com/rollcall/rollcall/pkg/call"
	"github.com/rollcall/rollcall/pkg/discovery/resolve"
	"github.com/rollcall/rollcall/pkg/etcdtest"
)

// A greeter with -metrics-listen serves its gRPC server metrics and its
// registration state on that port.
func TestGreeterServesMetrics(t *testing.T) {
	srv := etcdtest.Start(t)
	_, rec := startGreeter(t, srv.Endpoint(), "g1", "serving metrics", "-metrics-listen", "127.0.0.1:0")
	addr, _ := rec["addr"].(string)

	rb, err := resolve.NewBuilder(srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := call.Dial(rb, "greeter")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := greeterv1.NewGreeterServiceClient(conn)
	const calls = 5
	for range calls {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := client.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "metrics"}, grpc.WaitForReady(true))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}

	body := scrape(t, addr)
	for _, want := range []string{
		`grpc_server_handled_total{grpc_code="OK",grpc_method="SayHello",grpc_service="greeter.v1.GreeterService",grpc_type="unary"} 5`,
		`rollcall_discovery_registration_state{service="greeter",state="registered"} 1`,
		`rollcall_discovery_reregistrations_total{service="greeter"} 0`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics of the greeter has no line %s", want)
		}
	}
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}
