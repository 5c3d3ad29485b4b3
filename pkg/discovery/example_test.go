package discovery_test

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/discovery/register"
	"github.com/rollcall/rollcall/pkg/discovery/resolve"
)

// A server registers itself once it listens; the key stays in etcd while
// the process runs and goes when it closes the registration.
func Example_register() {
	etcd, stopEtcd := startEtcd()
	defer stopEtcd()
	addr, stopServer := startServer()
	defer stopServer()

	reg, err := register.New(etcd, discovery.Instance{Service: "greeter", ID: "greeter-1", Addr: addr},
		register.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		panic(err)
	}
	awaitRegistered(reg)
	fmt.Println(reg.Key(), reg.State().Phase)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := reg.Close(ctx); err != nil {
		panic(err)
	}
	resp, _ := etcd.Get(ctx, reg.Key())
	fmt.Println("keys left after Close:", len(resp.Kvs))
	// Output:
	// rollcall/greeter/greeter-1 registered
	// keys left after Close: 0
}

// A client dials the service by name; every call goes to one of the
// instances registered now, in turn.
func Example_dial() {
	etcd, stopEtcd := startEtcd()
	defer stopEtcd()
	quiet := register.WithLogger(slog.New(slog.DiscardHandler))
	for _, id := range []string{"greeter-1", "greeter-2"} {
		addr, stop := startServer()
		defer stop()
		reg, err := register.New(etcd, discovery.Instance{Service: "greeter", ID: id, Addr: addr}, quiet)
		if err != nil {
			panic(err)
		}
		defer reg.Close(context.Background())
		awaitRegistered(reg)
	}

	rb, err := resolve.NewBuilder(etcd)
	if err != nil {
		panic(err)
	}
	conn, err := grpc.NewClient(rb.Target("greeter"),
		grpc.WithResolvers(rb),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		panic(err)
	}
	defer conn.Close()

	// round_robin spreads calls over the instances that are connected;
	// the second may still be connecting for the first few calls.
	servedBy := map[string]int{}
	for calls := 0; len(servedBy) < 2 && calls < 1000; calls++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var served peer.Peer
		_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&served))
		cancel()
		if err != nil {
			panic(err)
		}
		servedBy[served.Addr.String()]++
	}
	fmt.Println("instances that served calls:", len(servedBy))
	// Output:
	// instances that served calls: 2
}
