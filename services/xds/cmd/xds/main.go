// Command xds is rollcall's lookaside model: an xDS control plane that
// serves, to proxyless gRPC clients in any language (xds:///SERVICE), the
// instances registered in etcd, with rollcall's defaults as xDS. It
// registers itself in etcd like any service (as "xds" by default), so
// several replicas can run and a client's bootstrap names them all: a
// client that starts while the first is down uses the next, and one that
// loses its control plane keeps what it received until it is back. Run
// with -h for its flags and environment.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	// The methods retried are the idempotent ones of the protos linked:
	// link the API of every service the control plane serves.
	_ "github.com/rollcall/rollcall/api/greeter/v1"
	"github.com/rollcall/rollcall/pkg/call"
	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/discovery/resolve"
	"github.com/rollcall/rollcall/pkg/flagenv"
	"github.com/rollcall/rollcall/pkg/logs"
	"github.com/rollcall/rollcall/pkg/serve"
	"github.com/rollcall/rollcall/pkg/telemetry"
	"github.com/rollcall/rollcall/services/xds/internal/controlplane"
)

func main() {
	os.Exit(logs.Main("xds", load, build))
}

// config is everything the control plane reads at start.
type config struct {
	Serve       serve.Config
	Etcd        discovery.EtcdConfig
	Log         logs.Config
	Telemetry   telemetry.Config
	Policy      string
	Services    []string
	SnapshotDir string
	SnapshotAge time.Duration
}

func (c *config) LogConfig() logs.Config { return c.Log }

// load parses args over the environment; its error names the bad flag or
// variable and value.
func load(args []string, getenv func(string) string, usage io.Writer) (*config, error) {
	c := &config{Serve: serve.Config{Listen: ":18000", Service: "xds"}, Policy: controlplane.RoundRobin}
	fs := flag.NewFlagSet("xds", flag.ContinueOnError)
	fs.SetOutput(usage)
	env := map[string]string{"policy": "XDS_POLICY", "services": "XDS_SERVICES", "snapshot-dir": "DISCOVERY_SNAPSHOT_DIR"}
	c.Serve.RegisterFlags(fs, env)
	c.Etcd.RegisterFlags(fs, env)
	c.Log.RegisterFlags(fs, env)
	c.Telemetry.RegisterFlags(fs, env)
	fs.StringVar(&c.Policy, "policy", c.Policy, "balancing policy of every cluster: round_robin or weighted_round_robin")
	services := fs.String("services", "", "comma-separated services to read from the start (others: from the first client that asks)")
	fs.StringVar(&c.SnapshotDir, "snapshot-dir", "", "directory for the last list of each service, served when etcd is down at start (off when empty)")
	fs.DurationVar(&c.SnapshotAge, "snapshot-max-age", resolve.DefaultSnapshotMaxAge, "oldest snapshot to serve")
	if err := flagenv.Parse(fs, env, args, getenv); err != nil {
		return nil, err
	}
	for s := range strings.SplitSeq(*services, ",") {
		if s = strings.TrimSpace(s); s != "" {
			c.Services = append(c.Services, s)
		}
	}
	c.Telemetry.ServiceName = c.Serve.Service
	errs := []error{c.Serve.Validate(), c.Etcd.Validate(), c.Telemetry.Validate(), c.defaults().Validate()}
	for _, s := range c.Services {
		errs = append(errs, discovery.ValidateService(s))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, errors.New(strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return c, nil
}

func (c *config) defaults() controlplane.Defaults {
	return controlplane.Defaults{Policy: c.Policy, RetryMethods: call.IdempotentMethods()}
}

// server is the control plane on its gRPC server.
type server struct {
	srv *serve.Server
	cp  *controlplane.ControlPlane
}

func build(c *config, log *slog.Logger) (server, func(), error) {
	etcd, closeEtcd, err := discovery.ConnectEtcd(c.Etcd, log)
	if err != nil {
		return server{}, nil, err
	}
	tel, closeTel, err := telemetry.New(c.Telemetry, log)
	if err != nil {
		closeEtcd()
		return server{}, nil, err
	}
	closeAll := func() { closeTel(); closeEtcd() }
	opts := append(tel.ResolveOptions(), resolve.WithNamespace(c.Serve.Namespace), resolve.WithLogger(log))
	if c.SnapshotDir != "" {
		opts = append(opts, resolve.WithSnapshots(c.SnapshotDir, c.SnapshotAge))
	}
	rb, err := resolve.NewBuilder(etcd, opts...)
	if err != nil {
		closeAll()
		return server{}, nil, err
	}
	cp, err := controlplane.New(rb, controlplane.Config{Defaults: c.defaults(), Services: c.Services}, log)
	if err != nil {
		closeAll()
		return server{}, nil, err
	}
	srv, err := serve.New(c.Serve, etcd, serve.WithLogger(log),
		serve.WithServerOptions(tel.ServerOptions()...), serve.WithRegisterOptions(tel.RegisterOptions()...))
	if err != nil {
		cp.Close()
		closeAll()
		return server{}, nil, fmt.Errorf("serve: %w", err)
	}
	cp.Register(srv)
	log.Info("xDS control plane", "policy", c.Policy, "retried", c.defaults().RetryMethods)
	return server{srv: srv, cp: cp}, func() { cp.Close(); closeAll() }, nil
}

// Run serves until ctx ends. The ADS streams end as the stop begins:
// clients keep what they hold and reconnect, and the graceful stop does
// not wait for streams that never end.
func (s server) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, s.cp.EndStreams)
	defer stop()
	return s.srv.Run(ctx)
}
