package discoverymetrics_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/discovery/discoverymetrics"
	"github.com/rollcall/rollcall/pkg/discovery/discoverytest"
	"github.com/rollcall/rollcall/pkg/discovery/register"
	"github.com/rollcall/rollcall/pkg/discovery/resolve"
	"github.com/rollcall/rollcall/pkg/etcdtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var quiet = slog.New(slog.DiscardHandler)

func newMetrics(t *testing.T) (*discoverymetrics.Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := discoverymetrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	return m, reg
}

// value sums the series of metric name whose labels include the given
// name-value pairs; it fails the test when there is none.
func value(t *testing.T, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	v, ok, err := lookup(g, name, labels...)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Fatalf("no series %s%v", name, labels)
	}
	return v
}

// lookup sums the series of metric name whose labels include the given
// name-value pairs, and reports whether there was any.
func lookup(g prometheus.Gatherer, name string, labels ...string) (sum float64, found bool, err error) {
	mfs, err := g.Gather()
	if err != nil {
		return 0, false, err
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				ok := false
				for _, l := range m.GetLabel() {
					ok = ok || l.GetName() == labels[i] && l.GetValue() == labels[i+1]
				}
				if !ok {
					continue series
				}
			}
			found = true
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum, found, nil
}

func want(t *testing.T, g prometheus.Gatherer, v float64, name string, labels ...string) {
	t.Helper()
	if got := value(t, g, name, labels...); got != v {
		t.Errorf("%s%v = %v, want %v", name, labels, got, v)
	}
}

// eventually waits until cond holds, for what has no event to wait on.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	// A bound for "never", not a measure of speed: on a loaded machine the
	// first failed lease renewal has taken more than 20 s to be counted.
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 2m", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRegistrationStateAndReregistrations(t *testing.T) {
	etcd := etcdtest.Start(t).Client()
	m, reg := newMetrics(t)
	r, err := register.New(etcd, discovery.Instance{Service: "greeter", ID: "g1", Addr: "127.0.0.1:1"},
		m.RegisterOption(), register.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	discoverytest.AwaitState(t, r, "registered", discoverytest.Registered)
	const state = "rollcall_discovery_registration_state"
	want(t, reg, 1, state, "service", "greeter", "state", "registered")
	want(t, reg, 0, state, "service", "greeter", "state", "registering")
	want(t, reg, 0, state, "service", "greeter", "state", "retrying")
	want(t, reg, 0, "rollcall_discovery_reregistrations_total", "service", "greeter")

	// A key deleted by hand is written again: one re-registration.
	if _, err := etcd.Delete(context.Background(), r.Key()); err != nil {
		t.Fatal(err)
	}
	discoverytest.AwaitState(t, r, "registered again", func(s register.State) bool { return s.Phase == register.Registered && s.Writes == 2 })
	want(t, reg, 1, "rollcall_discovery_reregistrations_total", "service", "greeter")
	want(t, reg, 1, state, "service", "greeter", "state", "registered")

	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	want(t, reg, 0, state, "service", "greeter")
	want(t, reg, 1, "rollcall_discovery_reregistrations_total", "service", "greeter")
}

// lists returns a Builder with m's metrics and what it publishes.
func lists(t *testing.T, m *discoverymetrics.Metrics, etcd *clientv3.Client) (*resolve.Builder, *discoverytest.Lists) {
	t.Helper()
	l := discoverytest.NewLists()
	rb, err := resolve.NewBuilder(etcd, m.ResolveOption(), resolve.WithLogger(quiet), resolve.WithObserver(l.Observer()))
	if err != nil {
		t.Fatal(err)
	}
	return rb, l
}

// registerInstance registers an instance of greeter and waits until its
// key is in etcd.
func registerInstance(t *testing.T, etcd *clientv3.Client, id string) {
	t.Helper()
	r := discoverytest.Register(t, etcd, discovery.Instance{Service: "greeter", ID: id, Addr: "127.0.0.1:" + id}, register.WithLogger(quiet))
	discoverytest.AwaitState(t, r, "registered", discoverytest.Registered)
}

func TestResolverUpdatesEndpointsAndWatchRestarts(t *testing.T) {
	srv := etcdtest.Start(t)
	etcd := srv.Client()
	registerInstance(t, etcd, "1001")
	registerInstance(t, etcd, "1002")
	m, reg := newMetrics(t)
	rb, published := lists(t, m, etcd)
	discoverytest.Dial(t, rb, "greeter", "")
	published.AwaitLen(t, "greeter", 2)
	want(t, reg, 2, "rollcall_discovery_resolver_endpoints", "service", "greeter")
	before := value(t, reg, "rollcall_discovery_resolver_updates_total", "service", "greeter")

	registerInstance(t, etcd, "1003")
	published.AwaitLen(t, "greeter", 3)
	want(t, reg, 3, "rollcall_discovery_resolver_endpoints", "service", "greeter")
	if after := value(t, reg, "rollcall_discovery_resolver_updates_total", "service", "greeter"); after <= before {
		t.Errorf("resolver updates %v after a new instance, want more than %v", after, before)
	}

	// An etcd restart ends the watch; the resolver lists again, and
	// counts the restart before it publishes that list.
	srv.Restart()
	published.AwaitLen(t, "greeter", 3)
	if got := value(t, reg, "rollcall_discovery_watch_restarts_total", "service", "greeter"); got < 1 {
		t.Errorf("watch restarts after an etcd restart = %v, want at least 1", got)
	}
	want(t, reg, 3, "rollcall_discovery_resolver_endpoints", "service", "greeter")
}

// A watch whose start revision was compacted counts a restart for that
// reason: etcd changes, then compacts, between the resolver's list and
// its watch.
func TestCompactedWatchCountsARestart(t *testing.T) {
	srv := etcdtest.Start(t)
	writer := srv.Client()
	reader := srv.Client()
	gate := discoverytest.GateWatches(reader)
	m, reg := newMetrics(t)
	registerInstance(t, writer, "1001")
	rb, published := lists(t, m, reader)
	discoverytest.Dial(t, rb, "greeter", "")
	select {
	case <-gate.Held():
	case <-time.After(20 * time.Second):
		t.Fatal("the resolver never watched")
	}
	published.AwaitLen(t, "greeter", 1)

	registerInstance(t, writer, "1002")
	registerInstance(t, writer, "1003")
	srv.Compact(context.Background())
	gate.Open()
	published.AwaitLen(t, "greeter", 3)
	want(t, reg, 1, "rollcall_discovery_watch_restarts_total", "service", "greeter", "reason", "compacted")
}

// etcd calls that fail are counted per service and operation: the
// registration's lease renewals, and the resolver's lists.
//
// The lease's TTL (10 s, renewed every 3 s) outlasts the stalls of a busy
// machine, so the lease is still there to renew once etcd is gone. A 1 s
// lease, whose renewals each have a third of a second, can expire before
// the stop; the registration then grants a new lease instead of renewing
// one, and no renewal fails.
func TestEtcdErrorsCounted(t *testing.T) {
	srv := etcdtest.Start(t)
	etcd := srv.Client()
	m, reg := newMetrics(t)
	r := discoverytest.Register(t, etcd, discovery.Instance{Service: "greeter", ID: "g1", Addr: "127.0.0.1:1"},
		m.RegisterOption(), register.WithLogger(quiet), register.WithTTL(10*time.Second))
	discoverytest.AwaitState(t, r, "registered", discoverytest.Registered)

	srv.Stop()
	// A resolver built while etcd is down fails its first list.
	rb, _ := lists(t, m, etcd)
	discoverytest.Dial(t, rb, "shop", "")
	counted := func(service, op string) func() bool {
		return func() bool {
			v, _, _ := lookup(reg, "rollcall_discovery_etcd_errors_total", "service", service, "op", op)
			return v >= 1
		}
	}
	eventually(t, "a failed lease renewal counted", counted("greeter", "keepalive"))
	eventually(t, "a failed list counted", counted("shop", "list"))
	srv.Start()
}
