package discovery_test

import (
	"net"
	"net/url"
	"os"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/rollcall/rollcall/pkg/discovery/register"
)

// startEtcd runs etcd in-process on a free 127.0.0.1 port for an example.
func startEtcd() (endpoint string, stop func()) {
	dir, err := os.MkdirTemp("", "example-etcd-")
	if err != nil {
		panic(err)
	}
	cfg := embed.NewConfig()
	cfg.Dir = dir
	client, peerURL := url.URL{Scheme: "http", Host: freeAddr()}, url.URL{Scheme: "http", Host: freeAddr()}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peerURL}, []url.URL{peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		panic(err)
	}
	<-e.Server.ReadyNotify()
	return client.String(), func() { e.Close(); os.RemoveAll(dir) }
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
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
	for {
		s, changed := r.Watch()
		if s.Phase == register.Registered {
			return
		}
		<-changed
	}
}
