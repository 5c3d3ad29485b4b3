package discovery_test

import (
	"context"
	"net"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/discovery/discoverytest"
	"github.com/rollcall/rollcall/pkg/discovery/register"
	"github.com/rollcall/rollcall/pkg/etcdtest"
)

// startEtcd runs etcd in-process on free 127.0.0.1 ports for an example,
// and returns a client of it, made as services make theirs.
func startEtcd() (etcd *clientv3.Client, stop func()) {
	srv, stopEtcd, err := etcdtest.StartExample()
	if err != nil {
		panic(err)
	}
	etcd, err = discovery.NewEtcdClient(clientv3.Config{Endpoints: []string{srv.Endpoint()}})
	if err != nil {
		stopEtcd()
		panic(err)
	}
	return etcd, func() { etcd.Close(); stopEtcd() }
}

// startServer runs a gRPC server with the health service on 127.0.0.1.
func startServer() (addr string, stop func()) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, health.NewServer())
	go s.Serve(l)
	return l.Addr().String(), s.Stop
}

func awaitRegistered(r *register.Registration) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := discoverytest.AwaitRegistered(ctx, r); err != nil {
		panic(err)
	}
}
