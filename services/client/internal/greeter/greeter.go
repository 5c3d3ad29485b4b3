// Package greeter reaches the greeter service through etcd discovery.
package greeter

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/google/wire"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	greeterv1 "github.com/rollcall/rollcall/api/greeter/v1"
	"github.com/rollcall/rollcall/pkg/call"
	"github.com/rollcall/rollcall/pkg/call/callxds"
	"github.com/rollcall/rollcall/pkg/discovery/resolve"
	"github.com/rollcall/rollcall/pkg/telemetry"
	"github.com/rollcall/rollcall/services/client/internal/config"
	"github.com/rollcall/rollcall/services/client/internal/instances"
)

// ProviderSet is the greeter client's providers.
var ProviderSet = wire.NewSet(NewResolver, NewConn, greeterv1.NewGreeterServiceClient)

// NewResolver resolves services from etcd, observed by tel and by the
// instances tracker, keeping snapshots of the lists when configured.
func NewResolver(cfg config.Target, etcd *clientv3.Client, log *slog.Logger, tel *telemetry.Telemetry, tracker *instances.Tracker) (*resolve.Builder, error) {
	opts := append(tel.ResolveOptions(), resolve.WithNamespace(cfg.Namespace), resolve.WithLogger(log), resolve.WithObserver(tracker))
	if cfg.SnapshotDir != "" {
		opts = append(opts, resolve.WithSnapshots(cfg.SnapshotDir, 0))
	}
	return resolve.NewBuilder(etcd, opts...)
}

// NewConn dials the configured service, its calls observed by tel; the
// cleanup closes the connection.
func NewConn(cfg config.Target, rb *resolve.Builder, etcd *clientv3.Client, tel *telemetry.Telemetry) (grpc.ClientConnInterface, func(), error) {
	if cfg.XDS {
		return dialXDS(cfg, etcd, tel)
	}
	opts := []call.Option{call.WithTLS(cfg.TLS)}
	if cfg.Policy != "" {
		opts = append(opts, call.WithPolicy(cfg.Policy))
	}
	if cfg.Zone != "" {
		opts = append(opts, call.WithZone(cfg.Zone))
	}
	opts = append(opts, tel.CallOptions()...)
	opts = append(opts, call.WithDialOptions(tel.DialOptions()...))
	conn, err := call.Dial(rb, cfg.Service, opts...)
	if err != nil {
		return nil, nil, err
	}
	return conn, func() { conn.Close() }, nil
}

// dialXDS dials through xDS, with the bootstrap $GRPC_XDS_BOOTSTRAP names
// or, without it, one naming the control planes registered in etcd.
func dialXDS(cfg config.Target, etcd *clientv3.Client, tel *telemetry.Telemetry) (grpc.ClientConnInterface, func(), error) {
	opts := []callxds.Option{callxds.WithDialOptions(tel.DialOptions()...)}
	if os.Getenv("GRPC_XDS_BOOTSTRAP") == "" && os.Getenv("GRPC_XDS_BOOTSTRAP_CONFIG") == "" {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		servers, err := callxds.ControlPlanes(ctx, etcd, cfg.Namespace, "xds")
		if err != nil {
			return nil, nil, err
		}
		host, _ := os.Hostname()
		bootstrap, err := callxds.Bootstrap("client@"+host, servers...)
		if err != nil {
			return nil, nil, err
		}
		opts = append(opts, callxds.WithBootstrap(bootstrap))
	}
	conn, err := callxds.Dial(cfg.Service, opts...)
	if err != nil {
		return nil, nil, err
	}
	return conn, func() { conn.Close() }, nil
}
