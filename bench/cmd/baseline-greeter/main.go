// Command baseline-greeter is the benchmarks' baseline: a greeter built
// only from etcd's client/v3/naming packages, the way their documentation
// shows, with a careful shutdown (delete the endpoint, then GracefulStop).
// It is what rollcall is measured against; do not use it as a template.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/naming/endpoints"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	greeterv1 "github.com/rollcall/rollcall/api/greeter/v1"
)

type greeter struct {
	greeterv1.UnimplementedGreeterServiceServer
	id string
}

func (g *greeter) SayHello(_ context.Context, req *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error) {
	return &greeterv1.SayHelloResponse{Message: "Hello " + req.GetName() + " from " + g.id, InstanceId: g.id}, nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "baseline-greeter:", err)
		os.Exit(1)
	}
}

func run() error {
	etcdAddr := flag.String("etcd-endpoints", "127.0.0.1:2379", "etcd endpoint")
	id := flag.String("id", "", "instance id")
	target := flag.String("target", "baseline/greeter", "endpoints target (key prefix)")
	ttl := flag.Int64("ttl", 10, "lease TTL in seconds")
	flag.Parse()

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	addr := lis.Addr().String()
	s := grpc.NewServer()
	greeterv1.RegisterGreeterServiceServer(s, &greeter{id: *id})
	go s.Serve(lis)

	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{*etcdAddr}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer cli.Close()
	em, err := endpoints.NewManager(cli, *target)
	if err != nil {
		return err
	}
	ctx := context.Background()
	lease, err := cli.Grant(ctx, *ttl)
	if err != nil {
		return err
	}
	key := *target + "/" + *id
	if err := em.AddEndpoint(ctx, key, endpoints.Endpoint{Addr: addr}, clientv3.WithLease(lease.ID)); err != nil {
		return err
	}
	ka, err := cli.KeepAlive(ctx, lease.ID)
	if err != nil {
		return err
	}
	go func() {
		for range ka {
		}
	}()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	em.DeleteEndpoint(dctx, key)
	cancel()
	s.GracefulStop()
	return nil
}
