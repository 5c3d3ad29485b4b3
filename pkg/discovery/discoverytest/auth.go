package discoverytest

import (
	"context"
	"testing"
	"time"

	"github.com/rollcall/rollcall/pkg/discovery/access"
	"github.com/rollcall/rollcall/pkg/etcdtest"
)

// StartWithAuth starts etcd with auth on: a root user with rootPassword,
// and svc's user (access.Apply) with password.
func StartWithAuth(tb testing.TB, svc access.Service, password, rootPassword string) *etcdtest.Server {
	tb.Helper()
	srv := etcdtest.Start(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := access.Apply(ctx, srv.Client(), svc, password); err != nil {
		tb.Fatal(err)
	}
	if err := access.Enable(ctx, srv.Client(), rootPassword); err != nil {
		tb.Fatal(err)
	}
	return srv
}
