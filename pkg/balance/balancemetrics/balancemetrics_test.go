package balancemetrics_test

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/rollcall/rollcall/pkg/balance/balancemetrics"
	"github.com/rollcall/rollcall/pkg/call"
	"github.com/rollcall/rollcall/pkg/discovery/discoverytest"
	"github.com/rollcall/rollcall/pkg/discovery/register"
	"github.com/rollcall/rollcall/pkg/discovery/resolve"
	"github.com/rollcall/rollcall/pkg/etcdtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// A client in zone a, an instance in zone a and one in zone b: once the
// zone a instance is ready, every call is counted in the local zone;
// nothing is ejected, starting or in panic mode; the counts stay when the
// connection closes.
func TestMetricsOfAZonedClient(t *testing.T) {
	srv := etcdtest.Start(t)
	for _, zone := range []string{"a", "b"} {
		b := discoverytest.StartBackend(t, "in-"+zone)
		inst := b.Instance("svc")
		inst.Metadata.Zone = zone
		discoverytest.Register(t, srv.Client(), inst, register.WithLogger(slog.New(slog.DiscardHandler)))
	}
	reg := prometheus.NewRegistry()
	m, err := balancemetrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := resolve.NewBuilder(srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := call.Dial(rb, "svc", call.WithZone("a"), call.WithBalanceObserver(m))
	if err != nil {
		t.Fatal(err)
	}
	client := healthpb.NewHealthClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Until zone a's instance is ready, calls go to zone b's.
	for {
		var md metadata.MD
		if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true), grpc.Header(&md)); err != nil {
			t.Fatal(err)
		}
		if slices.Contains(md.Get(discoverytest.InstanceHeader), "in-a") {
			break
		}
	}
	local0, other0 := value(t, reg, "rollcall_balance_calls_total", "local"), value(t, reg, "rollcall_balance_calls_total", "other")
	for range 20 {
		if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		name, zone string
		want       float64
	}{
		{"rollcall_balance_calls_total", "local", local0 + 20},
		{"rollcall_balance_calls_total", "other", other0},
		{"rollcall_balance_ejected_instances", "local", 0},
		{"rollcall_balance_ejections_total", "other", 0},
		{"rollcall_balance_slow_start_instances", "local", 0},
		{"rollcall_balance_panic_mode", "", 0},
		{"rollcall_balance_panics_total", "", 0},
	} {
		if got := value(t, reg, tt.name, tt.zone); got != tt.want {
			t.Errorf("%s{zone=%q} = %v, want %v", tt.name, tt.zone, got, tt.want)
		}
	}
	conn.Close()
	if got := value(t, reg, "rollcall_balance_calls_total", "local"); got != local0+20 {
		t.Errorf("after the connection closed, calls in the local zone = %v, want %v still", got, local0+20)
	}
}

// value is the value of the metric name of service svc in zone ("" for a
// metric without a zone); it fails the test if there is none.
func value(t *testing.T, reg *prometheus.Registry, name, zone string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["service"] != "svc" || labels["zone"] != zone {
				continue
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no %s{service=svc,zone=%q}", name, zone)
	return 0
}
