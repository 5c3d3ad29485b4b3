package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"

	"github.com/rollcall/rollcall/pkg/logs"
)

// NewEtcdClient returns an etcd client with the connection settings that
// discovery's recovery times depend on, for fields cfg leaves unset:
//
//   - reconnects at most 1 s apart (gRPC's default backs off to 2 minutes,
//     so after a 10 s etcd outage the client could stay away for another 6 s);
//   - keepalive pings, so a dead or partitioned etcd is noticed in seconds;
//   - a logger (unless cfg has one) that sends the client's errors, such as
//     a failed authentication, to slog.Default() and drops its warnings:
//     it warns of every failed call, which discovery reports with more
//     meaning (registration state, rollcall_discovery_etcd_errors_total);
//   - with a user and password, a login that does not need etcd up: a
//     wrong password is an error here when etcd answers within
//     cfg.DialTimeout (at most loginWait), but while etcd is down the client
//     is returned and logs in on the first call that reaches etcd, as a
//     client without auth would simply connect then.
//
// Share one client among every registration and resolver of a process.
func NewEtcdClient(cfg clientv3.Config) (*clientv3.Client, error) {
	if cfg.Logger == nil && cfg.LogConfig == nil {
		cfg.Logger = logs.Zap(slog.Default(), zap.ErrorLevel)
	}
	if cfg.DialKeepAliveTime == 0 {
		cfg.DialKeepAliveTime = 10 * time.Second
	}
	if cfg.DialKeepAliveTimeout == 0 {
		cfg.DialKeepAliveTimeout = 5 * time.Second
	}
	reconnect := grpc.WithConnectParams(grpc.ConnectParams{
		Backoff: grpcbackoff.Config{
			BaseDelay:  100 * time.Millisecond,
			Multiplier: 1.6,
			Jitter:     0.2,
			MaxDelay:   time.Second,
		},
		MinConnectTimeout: 5 * time.Second,
	})
	// Caller's options come last, so they win.
	cfg.DialOptions = append([]grpc.DialOption{reconnect}, cfg.DialOptions...)
	var auth *lazyAuth
	if cfg.Username != "" && cfg.Password != "" && cfg.Token == "" {
		auth = withLazyAuth(&cfg)
	}
	c, err := clientv3.New(cfg)
	if err != nil || auth == nil {
		return c, err
	}
	auth.attach(c)
	wait := loginWait
	if cfg.DialTimeout > 0 {
		wait = min(wait, cfg.DialTimeout)
	}
	ctx, cancel := context.WithTimeout(c.Ctx(), wait)
	defer cancel()
	switch err := auth.authenticate(ctx); {
	case err == nil:
	case errors.Is(err, rpctypes.ErrAuthFailed), errors.Is(err, rpctypes.ErrPermissionDenied):
		c.Close()
		return nil, fmt.Errorf("etcd login as %q: %w", auth.user, err)
	default:
		slog.Default().Warn("etcd did not answer the login; logging in on the first call that reaches it",
			"user", auth.user, "err", err)
	}
	return c, nil
}

// loginWait bounds how long NewEtcdClient waits for etcd to answer a login.
const loginWait = 2 * time.Second
