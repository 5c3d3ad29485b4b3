package main_test

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	greeterv1 "github.com/rollcall/rollcall/api/greeter/v1"
	"github.com/rollcall/rollcall/pkg/balance"
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
		// A service time well above a loaded machine's scheduling jitter:
		// an instance slower than its peers by 2x and 5 ms is rightly
		// taken to hold less capacity, and some calls leave its zone.
		p, _ := startGreeter(t, srv.Endpoint(), g.id, "registered in etcd", "-zone", g.zone, "-latency", "20ms")
		if g.zone == "a" {
			zoneA = append(zoneA, p)
		}
	}
	obs := &balance.Fleets{}
	client := dialGreeter(t, srv, call.WithZone("a"), call.WithBalanceObserver(obs))
	// Until every connection is ready, and while one slow-starts, zone a
	// holds less than its share: some calls rightly leave it.
	await(t, obs, "every instance ready, none starting", func(s balance.FleetStatus) bool {
		return s.Ready == 4 && s.Starting.Local+s.Starting.Other == 0
	})
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
	obs := &balance.Fleets{}
	client := dialGreeter(t, srv, call.WithBalanceObserver(obs))
	// INTERNAL is not retried: calls to the bad instance fail until it is
	// ejected, after five failures in a row (the default), or a few more
	// with calls in flight. How soon it is first picked depends on the
	// latencies the balancer sees, so the test calls until it is ejected.
	failed := 0
	for round := 0; obs.Status().Ejections == (balance.ByZone{}); round++ {
		if round == 50 {
			t.Fatalf("5000 calls, %d of them INTERNAL, and the bad instance was never ejected", failed)
		}
		got, _ := callMany(client, 100, 4, 10*time.Second)
		failed += got[codes.Internal]
	}
	if failed == 0 || failed > 20 {
		t.Errorf("%d calls failed with INTERNAL before the bad instance was ejected; want a few", failed)
	}
	// Ejected for 30 s at least: these calls go to the others.
	got, byID := callMany(client, 300, 4, 10*time.Second)
	if got[codes.OK] != 300 || byID["bad"] != 0 {
		t.Errorf("300 calls after the ejection ended %v, answered by %v; want all OK, none by bad", got, byID)
	}
}

// With two of three greeters answering INTERNAL, only one can be ejected
// (a third of them), and more than half are unhealthy: the client enters
// panic mode and spreads its calls over all three rather than pile them
// on the healthy one. rollcall_weighted, whose shares are exact.
func TestPanicModeSpreadsCallsOverEveryGreeter(t *testing.T) {
	srv := etcdtest.Start(t)
	startGreeter(t, srv.Endpoint(), "g1", "registered in etcd")
	for _, id := range []string{"bad1", "bad2"} {
		startGreeter(t, srv.Endpoint(), id, "registered in etcd", "-fail-rate", "1", "-fail-code", "INTERNAL")
	}
	obs := &balance.Fleets{}
	client := dialGreeter(t, srv, call.WithPolicy(balance.Weighted), call.WithBalanceObserver(obs))
	await(t, obs, "every instance ready", func(s balance.FleetStatus) bool { return s.Ready == 3 })
	for round := 0; !obs.Status().Panic; round++ {
		if round == 50 {
			t.Fatalf("5000 calls and no panic mode; status %+v", obs.Status())
		}
		callMany(client, 100, 4, 10*time.Second)
	}
	got, byID := callMany(client, 300, 4, 10*time.Second)
	// A third of the calls reach g1 and succeed; the rest reach the two
	// bad ones, the ejected one included, and fail.
	if byID["g1"] < 80 || byID["g1"] > 120 || got[codes.Internal] < 180 {
		t.Errorf("300 calls in panic mode ended %v, answered by %v; want a third answered by g1, the rest INTERNAL", got, byID)
	}
	if s := obs.Status(); s.Ejected.Local != 1 || !s.Panic {
		t.Errorf("status %+v: want one ejected, panic mode on", s)
	}
}

// A greeter that joins a fleet already serving starts at a tenth of its
// weight (rollcall_weighted, whose shares are exact; a window so long
// that its weight stays at about a tenth through the test); with slow
// start off it takes its full quarter at once.
func TestJoiningGreeterStartsSlowly(t *testing.T) {
	for _, tt := range []struct {
		window   time.Duration
		min, max int // of 1000 calls to the new greeter
	}{
		{10 * time.Minute, 10, 100}, // a tenth of a weight against three whole ones is 3 %
		{0, 200, 300},
	} {
		t.Run(fmt.Sprintf("window %v", tt.window), func(t *testing.T) {
			srv := etcdtest.Start(t)
			for _, id := range []string{"g1", "g2", "g3"} {
				startGreeter(t, srv.Endpoint(), id, "registered in etcd")
			}
			obs := &balance.Fleets{}
			client := dialGreeter(t, srv, call.WithPolicy(balance.Weighted), call.WithSlowStart(tt.window), call.WithBalanceObserver(obs))
			await(t, obs, "three instances ready", func(s balance.FleetStatus) bool { return s.Ready == 3 })
			// Only an instance that joins once the others have served for
			// a second starts slowly (a fleet starting together does not):
			// the policy's rule, not a synchronization.
			time.Sleep(1100 * time.Millisecond)
			startGreeter(t, srv.Endpoint(), "new", "registered in etcd")
			await(t, obs, "the new instance ready", func(s balance.FleetStatus) bool { return s.Ready == 4 })
			if _, byID := callMany(client, 1000, 4, 10*time.Second); byID["new"] < tt.min || byID["new"] > tt.max {
				t.Errorf("the new greeter answered %d of 1000 calls (%v), want %d to %d", byID["new"], byID, tt.min, tt.max)
			}
		})
	}
}

// await polls the balancers' status (they have no events) until ok says
// it shows what the test waits for; it fails the test after 30 s.
func await(t *testing.T, obs *balance.Fleets, what string, ok func(balance.FleetStatus) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s := obs.Status()
		if ok(s) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: never happened; status %+v", what, s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
