package controlplane

import (
	"fmt"
	"maps"
	"net"
	"regexp"
	"slices"
	"strconv"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	router "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	cswrr "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/client_side_weighted_round_robin/v3"
	wrrlocality "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/wrr_locality/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/rollcall/rollcall/pkg/discovery"
)

// Balancing policies a Cluster can name.
const (
	RoundRobin         = "round_robin"
	WeightedRoundRobin = "weighted_round_robin"
)

// MaxAttempts is how many attempts the retry policy allows an idempotent
// call, as call.MaxAttempts does on rollcall's own clients.
const MaxAttempts = 3

// Defaults are rollcall's client defaults, expressed as xDS.
type Defaults struct {
	// Policy balances calls within a locality: RoundRobin (every xDS
	// client supports it) or WeightedRoundRobin (weights from the
	// instances' ORCA load reports; grpc-go 1.55+ and Envoy).
	Policy string
	// RetryMethods get a retry policy on UNAVAILABLE, as
	// "/package.Service/Method": the methods the protos mark idempotent.
	RetryMethods []string
}

var methodRE = regexp.MustCompile(`^/[^/]+/[^/]+$`)

// Validate returns an error naming what is wrong.
func (d Defaults) Validate() error {
	if d.Policy != RoundRobin && d.Policy != WeightedRoundRobin {
		return fmt.Errorf("invalid xDS balancing policy %q: want %q or %q", d.Policy, RoundRobin, WeightedRoundRobin)
	}
	for _, m := range d.RetryMethods {
		if !methodRE.MatchString(m) {
			return fmt.Errorf("invalid method %q to retry: want /package.Service/Method", m)
		}
	}
	return nil
}

// serviceResources is what a proxyless gRPC client reads for
// xds:///service, each resource named service.
type serviceResources struct {
	listener *listener.Listener
	route    *route.RouteConfiguration
	cluster  *cluster.Cluster
	cla      *endpoint.ClusterLoadAssignment
}

func resourcesOf(service string, instances []discovery.Instance, d Defaults) serviceResources {
	return serviceResources{
		listener: listenerOf(service),
		route:    routeOf(service, d.RetryMethods),
		cluster:  clusterOf(service, d.Policy),
		cla:      loadAssignment(service, instances),
	}
}

func ads() *core.ConfigSource {
	return &core.ConfigSource{
		ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}},
		ResourceApiVersion:    core.ApiVersion_V3,
	}
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err) // every message here is a registered, well-formed type
	}
	return a
}

// listenerOf is the API listener gRPC looks up by the target's name.
func listenerOf(service string) *listener.Listener {
	manager := &hcm.HttpConnectionManager{
		RouteSpecifier: &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{ConfigSource: ads(), RouteConfigName: service}},
		// gRPC requires the router, last.
		HttpFilters: []*hcm.HttpFilter{{
			Name:       "envoy.filters.http.router",
			ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(&router.Router{})},
		}},
	}
	return &listener.Listener{
		Name:        service,
		ApiListener: &listener.ApiListener{ApiListener: mustAny(manager)},
	}
}

// routeOf sends every call to the service's cluster; the idempotent
// methods get a retry on UNAVAILABLE (another instance, at once), which
// is what keeps calls alive when an instance is killed.
func routeOf(service string, retryMethods []string) *route.RouteConfiguration {
	toCluster := func(retry *route.RetryPolicy) *route.Route_Route {
		return &route.Route_Route{Route: &route.RouteAction{
			ClusterSpecifier: &route.RouteAction_Cluster{Cluster: service},
			RetryPolicy:      retry,
		}}
	}
	// Envoy's default backoff. gRPC waits a random time up to it before a
	// retry, and an xDS client cannot exclude the instance that failed: a
	// retry within a millisecond of a kill can still find the dead
	// instance in the client's picker.
	retry := &route.RetryPolicy{
		RetryOn:    "unavailable",
		NumRetries: wrapperspb.UInt32(MaxAttempts - 1),
		RetryBackOff: &route.RetryPolicy_RetryBackOff{
			BaseInterval: durationpb.New(25 * time.Millisecond),
			MaxInterval:  durationpb.New(250 * time.Millisecond),
		},
	}
	routes := make([]*route.Route, 0, len(retryMethods)+1)
	for _, m := range slices.Sorted(slices.Values(retryMethods)) {
		routes = append(routes, &route.Route{
			Match:  &route.RouteMatch{PathSpecifier: &route.RouteMatch_Path{Path: m}},
			Action: toCluster(retry),
		})
	}
	routes = append(routes, &route.Route{
		Match:  &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
		Action: toCluster(nil),
	})
	return &route.RouteConfiguration{
		Name:         service,
		VirtualHosts: []*route.VirtualHost{{Name: service, Domains: []string{"*"}, Routes: routes}},
	}
}

// clusterOf is an EDS cluster with outlier detection: an instance whose
// calls fail far more than the others' is ejected for a while, as
// rollcall's own policies avoid failing instances.
func clusterOf(service, policy string) *cluster.Cluster {
	c := &cluster.Cluster{
		Name:                 service,
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_EDS},
		EdsClusterConfig:     &cluster.Cluster_EdsClusterConfig{EdsConfig: ads(), ServiceName: service},
		LbPolicy:             cluster.Cluster_ROUND_ROBIN,
		OutlierDetection: &cluster.OutlierDetection{
			Interval:             durationpb.New(5 * time.Second),
			BaseEjectionTime:     durationpb.New(15 * time.Second),
			MaxEjectionTime:      durationpb.New(2 * time.Minute),
			MaxEjectionPercent:   wrapperspb.UInt32(50),
			EnforcingSuccessRate: wrapperspb.UInt32(0),
			// At least half of an instance's calls failed, over 20 calls
			// or more, with 3 instances or more to compare with.
			FailurePercentageThreshold:     wrapperspb.UInt32(50),
			EnforcingFailurePercentage:     wrapperspb.UInt32(100),
			FailurePercentageMinimumHosts:  wrapperspb.UInt32(3),
			FailurePercentageRequestVolume: wrapperspb.UInt32(20),
		},
	}
	if policy == WeightedRoundRobin {
		// Only the newer load_balancing_policy field can name WRR; clients
		// that read it ignore lb_policy.
		endpointPicking := &cluster.LoadBalancingPolicy{Policies: []*cluster.LoadBalancingPolicy_Policy{{
			TypedExtensionConfig: &core.TypedExtensionConfig{
				Name:        "envoy.load_balancing_policies.client_side_weighted_round_robin",
				TypedConfig: mustAny(&cswrr.ClientSideWeightedRoundRobin{}),
			},
		}}}
		c.LoadBalancingPolicy = &cluster.LoadBalancingPolicy{Policies: []*cluster.LoadBalancingPolicy_Policy{{
			TypedExtensionConfig: &core.TypedExtensionConfig{
				Name:        "envoy.load_balancing_policies.wrr_locality",
				TypedConfig: mustAny(&wrrlocality.WrrLocality{EndpointPickingPolicy: endpointPicking}),
			},
		}}}
	}
	return c
}

// loadAssignment groups the instances into localities by zone, each
// weighted by the sum of its instances' weights, so that registered
// weights steer calls between zones; within one, each endpoint carries
// its own weight. A key in etcd means a live, serving instance
// (serve deregisters before it stops serving): every endpoint is HEALTHY.
func loadAssignment(service string, instances []discovery.Instance) *endpoint.ClusterLoadAssignment {
	byZone := map[string]*endpoint.LocalityLbEndpoints{}
	for _, inst := range instances {
		host, portText, err := net.SplitHostPort(inst.Addr)
		port, perr := strconv.ParseUint(portText, 10, 16)
		if err != nil || perr != nil {
			continue
		}
		weight := max(inst.Metadata.Weight, 1)
		loc, ok := byZone[inst.Metadata.Zone]
		if !ok {
			loc = &endpoint.LocalityLbEndpoints{
				Locality:            &core.Locality{Zone: inst.Metadata.Zone},
				LoadBalancingWeight: wrapperspb.UInt32(0),
			}
			byZone[inst.Metadata.Zone] = loc
		}
		loc.LoadBalancingWeight.Value += weight
		loc.LbEndpoints = append(loc.LbEndpoints, &endpoint.LbEndpoint{
			HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{
				Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
					Address:       host,
					PortSpecifier: &core.SocketAddress_PortValue{PortValue: uint32(port)},
				}}},
			}},
			HealthStatus:        core.HealthStatus_HEALTHY,
			LoadBalancingWeight: wrapperspb.UInt32(weight),
		})
	}
	cla := &endpoint.ClusterLoadAssignment{ClusterName: service}
	for _, zone := range slices.Sorted(maps.Keys(byZone)) {
		cla.Endpoints = append(cla.Endpoints, byZone[zone])
	}
	return cla
}
