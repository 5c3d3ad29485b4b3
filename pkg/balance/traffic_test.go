package balance_test

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/rollcall/rollcall/pkg/balance"
	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/discovery/discoverytest"
	"github.com/rollcall/rollcall/pkg/discovery/register"
	"github.com/rollcall/rollcall/pkg/discovery/resolve"
	"github.com/rollcall/rollcall/pkg/etcdtest"
)

// Traffic management against real gRPC servers on 127.0.0.1, found
// through a real etcd. Nothing here rests on how fast the machine is:
// each test waits for what it expects, with a generous deadline, or
// counts calls.

// startZoned starts a backend per zone given ("" for none), registered
// with that zone, named b1, b2, ...
func startZoned(t *testing.T, srv *etcdtest.Server, zones ...string) []*backend {
	t.Helper()
	var out []*backend
	for i, zone := range zones {
		out = append(out, startOne(t, srv, fmt.Sprintf("b%d", i+1), zone))
	}
	return out
}

func startOne(t *testing.T, srv *etcdtest.Server, id, zone string) *backend {
	t.Helper()
	b := &backend{id: id, latency: time.Millisecond, resume: make(chan struct{})}
	b.addr = discoverytest.Serve(t, b)
	discoverytest.Register(t, srv.Client(), discovery.Instance{Service: "svc", ID: b.id, Addr: b.addr, Metadata: discovery.Metadata{Zone: zone}},
		register.WithLogger(slog.New(slog.DiscardHandler)))
	t.Cleanup(func() {
		if b.paused.Load() {
			b.unpause()
		}
	})
	return b
}

// dialObserved dials svc with policy and config, its balancers reported
// to the returned observer.
func dialObserved(t *testing.T, srv *etcdtest.Server, policy, config string) (healthpb.HealthClient, *balance.Fleets) {
	t.Helper()
	rb, err := resolve.NewBuilder(srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	obs := &balance.Fleets{}
	conn, err := grpc.NewClient(rb.Target("svc"), grpc.WithResolvers(balance.WithObserver(rb, "svc", obs)),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"`+policy+`":`+config+`}]}`))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return healthpb.NewHealthClient(conn), obs
}

// fleetStatus is what the connection's one balancer does now.
func fleetStatus(t *testing.T, obs *balance.Fleets) balance.FleetStatus {
	t.Helper()
	if n := obs.Len(); n != 1 {
		t.Fatalf("%d balancers running, want 1", n)
	}
	return obs.Status()
}

// await calls until done says the calls of a round (n of them) show what
// the test waits for; it fails the test after 20 s.
func await(t *testing.T, client healthpb.HealthClient, n int, what string, done func(map[string]int) bool) map[string]int {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := spread(client, n, time.Second)
		if done(got) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: never happened; last %d calls: %v", what, n, got)
		}
	}
}

// While the client's zone has its share, every call stays in it; when its
// instances stall, calls go to the other zone; when they beat again, calls
// come back. Instances with no zone count as every zone's.
func TestZoneAwareRoutingWithFailover(t *testing.T) {
	for _, policy := range []string{balance.P2CEWMA, balance.Weighted} {
		t.Run(policy, func(t *testing.T) {
			srv := etcdtest.Start(t)
			backends := startZoned(t, srv, "a", "", "b", "b")
			client, obs := dialObserved(t, srv, policy, `{"zone":"a"}`)
			inA := func(got map[string]int) int { return got["b1"] + got["b2"] }
			await(t, client, 40, "calls to both of zone a's instances", func(got map[string]int) bool { return got["b1"] > 0 && got["b2"] > 0 })

			got := spread(client, 300, time.Second)
			if inA(got) != 300 {
				t.Errorf("300 calls from zone a: %v; want all to b1 (zone a) and b2 (no zone)", got)
			}

			backends[0].pause()
			backends[1].pause()
			await(t, client, 40, "every call to zone b once zone a's instances stall", func(got map[string]int) bool {
				return got["b3"]+got["b4"] == 40
			})
			backends[0].unpause()
			backends[1].unpause()
			await(t, client, 40, "every call back in zone a", func(got map[string]int) bool { return inA(got) == 40 })
			if s := fleetStatus(t, obs); s.Zone != "a" || s.Calls.Local == 0 || s.Calls.Other == 0 {
				t.Errorf("status %+v: want zone a, calls counted in both zones", s)
			}
		})
	}
}

// failing makes b answer Check with code c (codes.OK: answer again).
func (b *backend) failing(c codes.Code) { b.failCode.Store(uint32(c)) }

// An instance whose calls fail with INTERNAL is ejected after five in a
// row and gets no calls while ejected; one that answers NOT_FOUND (an
// application's code) keeps its share. Once it answers again, it comes
// back on its own when its ejection ends.
func TestFailingInstanceIsEjectedAndComesBack(t *testing.T) {
	for _, policy := range []string{balance.P2CEWMA, balance.Weighted} {
		t.Run(policy, func(t *testing.T) {
			srv := etcdtest.Start(t)
			backends := startZoned(t, srv, "", "", "")
			client, obs := dialObserved(t, srv, policy, `{"outlierEjection":{"baseEjectionTime":"1s"}}`)
			awaitAll(t, client, 3)
			backends[1].failing(codes.NotFound)
			backends[2].failing(codes.Internal)
			before := backends[2].calls.Load()
			// rollcall_p2c_ewma may hold back for a while an instance whose
			// first answers were slow: calls go on until it was tried.
			got, calls := map[string]int{}, 0
			for calls < 3000 && (calls == 0 || fleetStatus(t, obs).Ejections.Local == 0) {
				for k, v := range spread(client, 300, time.Second) {
					got[k] += v
				}
				calls += 300
			}
			// Calls are made one at a time: the fifth failure in a row
			// ejects it before the next call, and it gets none until its
			// ejection ends. The calls may outlast the first ejection (1 s)
			// on a loaded machine: then five more eject it again.
			n := backends[2].calls.Load() - before
			s := fleetStatus(t, obs)
			if e := s.Ejections.Local; e < 1 || n < 5*e || n >= 5*(e+1) || int64(got["error"]) != n+int64(got["notfound"]) {
				t.Errorf("%d calls: %v, %d to the failing instance, %d ejections; want exactly 5 to it before each ejection, none while ejected", calls, got, n, e)
			}
			// rollcall_weighted's shares are exact; rollcall_p2c_ewma's follow
			// latencies.
			if policy == balance.Weighted && got["notfound"] < (calls-int(n))/2-5 {
				t.Errorf("%d calls: %v; want the instance answering NOT_FOUND to keep its half of the others", calls, got)
			}
			// Were NOT_FOUND counted, it would be failing too: two unhealthy
			// of three is panic mode.
			if s.Panic {
				t.Errorf("status %+v: want no panic", s)
			}
			backends[2].failing(codes.OK)
			await(t, client, 30, "the ejected instance answering again", func(got map[string]int) bool { return got["b3"] > 0 })
		})
	}
}

// When two of three instances fail, only one can be ejected (a third),
// and more than half are unhealthy: the policy balances over all three
// (panic mode) rather than send everything to one. rollcall_weighted,
// whose shares are exact: rollcall_p2c_ewma's follow the latencies, which
// on a loaded machine can hold one instance out of a few hundred calls.
func TestPanicModeSpreadsCalls(t *testing.T) {
	srv := etcdtest.Start(t)
	backends := startZoned(t, srv, "", "", "")
	client, obs := dialObserved(t, srv, balance.Weighted, `{}`)
	awaitAll(t, client, 3)
	backends[1].failing(codes.Internal)
	backends[2].failing(codes.Unknown)
	await(t, client, 30, "panic mode", func(map[string]int) bool { return fleetStatus(t, obs).Panic })
	var before [3]int64
	for i, b := range backends {
		before[i] = b.calls.Load()
	}
	spread(client, 300, time.Second)
	for i, b := range backends {
		if n := b.calls.Load() - before[i]; n < 30 {
			t.Errorf("in panic mode, b%d got %d of 300 calls; want them spread over all three", i+1, n)
		}
	}
	if s := fleetStatus(t, obs); s.Panics != 1 || s.Ejected.Local != 1 {
		t.Errorf("status %+v: want panic entered once, one instance ejected", s)
	}
}

// An instance that joins while others serve starts at a tenth of its
// weight (exact shares: rollcall_weighted), unless slow start is off.
func TestNewInstanceStartsSlowly(t *testing.T) {
	for _, tt := range []struct {
		config   string
		min, max int // calls of 1000 to the new instance
	}{
		// A tenth of a weight against three whole ones is 3 %; a long
		// window keeps it below 10 % however slow the machine.
		{`{"slowStartWindow":"10m"}`, 10, 100},
		{`{"slowStartWindow":"0s"}`, 200, 300},
	} {
		t.Run(tt.config, func(t *testing.T) {
			balance.SetSlowStartAfter(t, 0) // the fourth joins as soon as the others answer
			srv := etcdtest.Start(t)
			startZoned(t, srv, "", "", "")
			awaitKeys(t, srv, 3) // the client finds all three at its start: none is new to it
			client, obs := dialObserved(t, srv, balance.Weighted, tt.config)
			awaitAll(t, client, 3)
			startOne(t, srv, "b4", "")
			await(t, client, 100, "the new instance answering", func(got map[string]int) bool { return got["b4"] > 0 })
			if n := spread(client, 1000, time.Second)["b4"]; n < tt.min || n > tt.max {
				t.Errorf("the new instance got %d of 1000 calls, want %d to %d", n, tt.min, tt.max)
			}
			starting := int64(0)
			if tt.max < 250 {
				starting = 1
			}
			if s := fleetStatus(t, obs); s.Starting.Local != starting {
				t.Errorf("status %+v: want %d instance in slow start", s, starting)
			}
		})
	}
}
