// Package greeter reaches the greeter service through etcd discovery.
package greeter

import (
	"fmt"
	"log/slog"

	"github.com/google/wire"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	greeterv1 "github.com/rollcall/rollcall/api/greeter/v1"
	"github.com/rollcall/rollcall/pkg/call"
	"github.com/rollcall/rollcall/pkg/discovery/resolve"
	"github.com/rollcall/rollcall/services/client/internal/config"
)

// ProviderSet is the greeter client's providers.
var ProviderSet = wire.NewSet(NewEtcdClient, NewResolver, NewConn, greeterv1.NewGreeterServiceClient)

// NewEtcdClient connects to etcd as configured; the cleanup closes it.
func NewEtcdClient(cfg *config.Config, log *slog.Logger) (*clientv3.Client, func(), error) {
	c, err := cfg.Etcd.NewClient()
	if err != nil {
		return nil, nil, fmt.Errorf("etcd client: %w", err)
	}
	log.Info("etcd client", "etcd", cfg.Etcd.String())
	return c, func() { c.Close() }, nil
}

// NewResolver resolves services from etcd.
func NewResolver(cfg *config.Config, etcd *clientv3.Client, log *slog.Logger) (*resolve.Builder, error) {
	return resolve.NewBuilder(etcd, resolve.WithNamespace(cfg.Namespace), resolve.WithLogger(log))
}

// NewConn dials the configured service; the cleanup closes the connection.
func NewConn(cfg *config.Config, rb *resolve.Builder) (grpc.ClientConnInterface, func(), error) {
	opts := []call.Option{call.WithTLS(cfg.TLS)}
	if cfg.Policy != "" {
		opts = append(opts, call.WithPolicy(cfg.Policy))
	}
	conn, err := call.Dial(rb, cfg.Service, opts...)
	if err != nil {
		return nil, nil, err
	}
	return conn, func() { conn.Close() }, nil
}
