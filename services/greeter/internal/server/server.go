// Package server serves the greeter over gRPC and registers it in etcd.
package server

import (
	"fmt"
	"log/slog"

	"github.com/google/wire"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/serve"
	"github.com/rollcall/rollcall/pkg/telemetry"
	"github.com/rollcall/rollcall/services/greeter/internal/config"
	"github.com/rollcall/rollcall/services/greeter/internal/service"
)

// ProviderSet is the server layer's providers.
var ProviderSet = wire.NewSet(NewTelemetry, NewEtcdClient, NewGRPCServer, Instance, Faults)

// NewTelemetry serves metrics and traces calls as configured (each off
// unless set); the cleanup stops the metrics server and flushes spans.
func NewTelemetry(cfg *config.Config, log *slog.Logger) (*telemetry.Telemetry, func(), error) {
	return telemetry.New(cfg.Telemetry, log)
}

// NewEtcdClient connects to etcd as configured; the cleanup closes it.
func NewEtcdClient(cfg *config.Config, log *slog.Logger) (*clientv3.Client, func(), error) {
	c, err := cfg.Etcd.NewClient()
	if err != nil {
		return nil, nil, fmt.Errorf("etcd client: %w", err)
	}
	log.Info("etcd client", "etcd", cfg.Etcd.String())
	return c, func() { c.Close() }, nil
}

// NewGRPCServer listens and returns the server the greeter runs on, with
// its calls and registration observed by tel.
func NewGRPCServer(cfg *config.Config, etcd *clientv3.Client, log *slog.Logger, tel *telemetry.Telemetry) (*serve.Server, func(), error) {
	s, err := serve.New(cfg.Serve, etcd, log, tel.ServerOptions()...)
	if err != nil {
		return nil, nil, err
	}
	s.AddRegisterOptions(tel.RegisterOptions()...)
	return s, s.Close, nil
}

// Instance is what the server registers: the greeter names it in answers.
func Instance(s *serve.Server) discovery.Instance { return s.Instance() }

// Faults are the configured artificial misbehaviours.
func Faults(cfg *config.Config) service.Faults { return cfg.Faults }
