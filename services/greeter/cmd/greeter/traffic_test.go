package main_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	greeterv1 "github.com/rollcall/rollcall/api/greeter/v1"
	"github.com/rollcall/rollcall/pkg/call"
	"github.com/rollcall/rollcall/pkg/discovery/resolve"
	"github.com/rollcall/rollcall/pkg/etcdtest"
)

// dialGreeter dials the greeters registered in srv with rollcall's
// defaults and opts, and waits until an instance answers a call (with an
// error of its own, too).
func dialGreeter(t *testing.T, srv *etcdtest.Server, opts ...call.Option) greeterv1.GreeterServiceClient {
	t.Helper()
	client := newClient(t, srv, opts...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := client.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "warmup"}, grpc.WaitForReady(true))
	if code := status.Code(err); code == codes.Unavailable || code == codes.DeadlineExceeded {
		t.Fatal(err)
	}
	return client
}

// newClient dials the greeters registered in srv through call.Dial with
// opts, until the test ends.
func newClient(t *testing.T, srv *etcdtest.Server, opts ...call.Option) greeterv1.GreeterServiceClient {
	t.Helper()
	rb, err := resolve.NewBuilder(srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := call.Dial(rb, "greeter", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return greeterv1.NewGreeterServiceClient(conn)
}

// A client in zone a calls the greeters of zone a only; when they are all
// killed, its calls go to zone b with none lost.
func TestZoneKeepsCallsInTheClientsZoneAndFailsOver(t *testing.T) {
	srv := etcdtest.Start(t)
	var zoneA []*greeter
	for _, g := range []struct{ id, zone string }{{"a1", "a"}, {"a2", "a"}, {"b1", "b"}, {"b2", "b"}} {
		p, _ := startGreeter(t, srv.Endpoint(), g.id, "registered in etcd", "-zone", g.zone)
		if g.zone == "a" {
			zoneA = append(zoneA, p)
		}
	}
	client := dialGreeter(t, srv, call.WithZone("a"))
	got, byID := callMany(client, 200, 4, 10*time.Second)
	if got[codes.OK] != 200 || byID["b1"]+byID["b2"] > 2 {
		t.Errorf("200 calls from zone a ended %v, answered by %v; want all OK and at least 99 %% in zone a", got, byID)
	}

	for _, g := range zoneA {
		if err := g.proc.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-g.proc.Done()
	}
	got, byID = callMany(client, 200, 4, 10*time.Second)
	if got[codes.OK] != 200 || byID["b1"]+byID["b2"] != 200 {
		t.Errorf("200 calls after zone a was killed ended %v, answered by %v; want all OK, all in zone b", got, byID)
	}
}

// An instance that answers INTERNAL to every call (a bad deploy) is
// ejected after a few failures: afterwards no call fails.
func TestBadDeployIsEjected(t *testing.T) {
	srv := etcdtest.Start(t)
	startGreeter(t, srv.Endpoint(), "g1", "registered in etcd")
	startGreeter(t, srv.Endpoint(), "g2", "registered in etcd")
	startGreeter(t, srv.Endpoint(), "bad", "registered in etcd", "-fail-rate", "1", "-fail-code", "INTERNAL")
	client := dialGreeter(t, srv)
	// INTERNAL is not retried: the first calls to it fail until it is
	// ejected, five failures in a row at most per the default.
	got, _ := callMany(client, 300, 4, 10*time.Second)
	if got[codes.Internal] == 0 || got[codes.Internal] > 20 {
		t.Errorf("300 calls with a bad instance ended %v; want a few INTERNAL before it is ejected", got)
	}
	// Ejected for 30 s at least: these calls go to the others.
	got, byID := callMany(client, 300, 4, 10*time.Second)
	if got[codes.OK] != 300 || byID["bad"] != 0 {
		t.Errorf("300 calls after the ejection ended %v, answered by %v; want all OK, none by bad", got, byID)
	}
}
