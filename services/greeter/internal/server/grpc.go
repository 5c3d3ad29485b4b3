// Package server serves the greeter: its API over gRPC, registered in
// etcd, and the outage drill driven by signals.
package server

import (
	"log/slog"

	"github.com/google/wire"
	clientv3 "go.etcd.io/etcd/client/v3"

	greeterv1 "github.com/rollcall/rollcall/api/greeter/v1"
	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/serve"
	"github.com/rollcall/rollcall/pkg/telemetry"
	"github.com/rollcall/rollcall/services/greeter/internal/service"
)

// ProviderSet is the server layer's providers.
var ProviderSet = wire.NewSet(Listen, Instance, NewGRPCServer, NewOutageDrill)

// Listen returns the server the greeter runs on, listening (a taken port
// fails here), with its calls and registration observed by tel; the
// cleanup releases the port of a server that never ran.
func Listen(cfg serve.Config, etcd *clientv3.Client, tel *telemetry.Telemetry, log *slog.Logger) (*serve.Server, func(), error) {
	s, err := serve.New(cfg, etcd, serve.WithLogger(log),
		serve.WithServerOptions(tel.ServerOptions()...), serve.WithRegisterOptions(tel.RegisterOptions()...))
	if err != nil {
		return nil, nil, err
	}
	return s, s.Close, nil
}

// Instance is what the server registers: the greeter answers in its name.
func Instance(s *serve.Server) discovery.Instance { return s.Instance() }

// GRPCServer is the greeter's server with the greeter API on it: what the
// command runs.
type GRPCServer struct {
	*serve.Server
}

// NewGRPCServer registers the greeter API on s.
func NewGRPCServer(s *serve.Server, greeter *service.Greeter) GRPCServer {
	greeterv1.RegisterGreeterServiceServer(s, greeter)
	return GRPCServer{s}
}
