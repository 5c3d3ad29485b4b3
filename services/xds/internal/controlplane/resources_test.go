package controlplane

import (
	"strings"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/rollcall/rollcall/pkg/discovery"
)

// Instances are grouped by zone into localities weighted by the sum of
// their weights (0 counts as 1), every one HEALTHY.
func TestLoadAssignmentGroupsZonesWithTheirWeights(t *testing.T) {
	cla := loadAssignment("greeter", []discovery.Instance{
		{ID: "a", Addr: "10.0.0.1:50051", Metadata: discovery.Metadata{Zone: "z1", Weight: 3}},
		{ID: "b", Addr: "10.0.0.2:50051", Metadata: discovery.Metadata{Zone: "z1"}},
		{ID: "c", Addr: "10.0.0.3:50052", Metadata: discovery.Metadata{Zone: "z2", Weight: 2}},
		{ID: "bad", Addr: "no-port"},
	})
	if len(cla.Endpoints) != 2 {
		t.Fatalf("%d localities, want 2 (z1, z2)", len(cla.Endpoints))
	}
	for i, want := range []struct {
		zone    string
		weight  uint32
		weights []uint32
	}{{"z1", 4, []uint32{3, 1}}, {"z2", 2, []uint32{2}}} {
		loc := cla.Endpoints[i]
		if loc.Locality.Zone != want.zone || loc.LoadBalancingWeight.GetValue() != want.weight || len(loc.LbEndpoints) != len(want.weights) {
			t.Errorf("locality %d = zone %q weight %d with %d endpoints, want %q %d %d", i, loc.Locality.Zone,
				loc.LoadBalancingWeight.GetValue(), len(loc.LbEndpoints), want.zone, want.weight, len(want.weights))
			continue
		}
		for j, ep := range loc.LbEndpoints {
			if ep.LoadBalancingWeight.GetValue() != want.weights[j] || ep.HealthStatus != core.HealthStatus_HEALTHY {
				t.Errorf("endpoint %d of %s: weight %d, %v; want %d, HEALTHY", j, want.zone, ep.LoadBalancingWeight.GetValue(), ep.HealthStatus, want.weights[j])
			}
		}
	}
}

// The idempotent methods retry on UNAVAILABLE; every other call goes to
// the same cluster without a retry, through the last route.
func TestRouteRetriesOnlyIdempotentMethods(t *testing.T) {
	rc := routeOf("greeter", []string{"/greeter.v1.GreeterService/SayHello"})
	routes := rc.VirtualHosts[0].Routes
	if len(routes) != 2 {
		t.Fatalf("%d routes, want 2", len(routes))
	}
	first, last := routes[0], routes[1]
	if first.Match.GetPath() != "/greeter.v1.GreeterService/SayHello" || first.GetRoute().RetryPolicy.GetRetryOn() != "unavailable" ||
		first.GetRoute().RetryPolicy.NumRetries.GetValue() != MaxAttempts-1 {
		t.Errorf("first route %v, want SayHello retried on unavailable %d times", first, MaxAttempts-1)
	}
	if last.Match.GetPrefix() != "/" || last.GetRoute().RetryPolicy != nil || last.GetRoute().GetCluster() != "greeter" {
		t.Errorf("last route %v, want every call to greeter, no retry", last)
	}
}

func TestClusterPolicyAndOutlierDetection(t *testing.T) {
	rr := clusterOf("greeter", RoundRobin)
	if rr.LoadBalancingPolicy != nil || rr.OutlierDetection.GetEnforcingFailurePercentage().GetValue() != 100 {
		t.Errorf("round robin cluster %v: want lb_policy only, and failure-percentage ejection on", rr)
	}
	wrr := clusterOf("greeter", WeightedRoundRobin)
	if name := wrr.LoadBalancingPolicy.GetPolicies()[0].GetTypedExtensionConfig().GetName(); name != "envoy.load_balancing_policies.wrr_locality" {
		t.Errorf("weighted cluster's policy is %q, want wrr_locality", name)
	}
}

func TestDefaultsNameWhatIsWrong(t *testing.T) {
	for _, d := range []struct {
		d    Defaults
		want string
	}{
		{Defaults{Policy: "ring_hash"}, `"ring_hash"`},
		{Defaults{Policy: RoundRobin, RetryMethods: []string{"SayHello"}}, `"SayHello"`},
		{Defaults{Policy: RoundRobin, RetryMethods: []string{"/a/b/c"}}, `"/a/b/c"`},
	} {
		if err := d.d.Validate(); err == nil || !strings.Contains(err.Error(), d.want) {
			t.Errorf("Validate(%+v) = %v, want an error naming %s", d.d, err, d.want)
		}
	}
	if err := (Defaults{Policy: WeightedRoundRobin, RetryMethods: []string{"/greeter.v1.GreeterService/SayHello"}}).Validate(); err != nil {
		t.Errorf("valid defaults: %v", err)
	}
	if _, err := New(nil, Config{}, nil); err == nil {
		t.Error("New(nil builder) succeeded")
	}
}
