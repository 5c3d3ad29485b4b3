// Package balance adds load-aware balancing policies to gRPC. Import it
// (call does) and name a policy in the service config:
//
//	{"loadBalancingConfig":[{"rollcall_p2c_ewma":{}}]}
//
// Policies:
//
//   - rollcall_p2c_ewma (P2CEWMA): power of two choices by EWMA latency times
//     calls in flight; for unequal or stalling instances.
//   - rollcall_weighted (Weighted): smooth weighted round robin by the
//     weight each instance registered (discovery.Metadata.Weight).
//
// Both skip an instance whose heartbeat stopped (a stopped or stuck
// process: see LivenessService) until it beats again, and both use
// grpc-go's pick_first per instance, so client health checking works.
package balance

import (
	"encoding/json"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/endpointsharding"
	"google.golang.org/grpc/balancer/pickfirst"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
)

// Policy names.
const (
	P2CEWMA  = "rollcall_p2c_ewma"
	Weighted = "rollcall_weighted"
)

func init() {
	balancer.Register(builder{name: P2CEWMA, newPicker: newP2CPicker})
	balancer.Register(builder{name: Weighted, newPicker: newWeightedPicker})
}

// endpoint is what a picker knows of one ready instance.
type endpoint struct {
	picker   balancer.Picker // the instance's pick_first picker
	weight   uint32
	stats    *stats
	liveness func() *liveness
}

// stats are kept per address across picker updates.
type stats struct {
	inflight atomic.Int64
	ewmaNs   atomic.Int64 // latency estimate (see weightDown), nanoseconds
}

type builder struct {
	name      string
	newPicker func([]endpoint) balancer.Picker
}

func (b builder) Name() string { return b.name }

type config struct {
	serviceconfig.LoadBalancingConfig
}

func (builder) ParseConfig(js json.RawMessage) (serviceconfig.LoadBalancingConfig, error) {
	return &config{}, nil
}

func (b builder) Build(cc balancer.ClientConn, opts balancer.BuildOptions) balancer.Balancer {
	lb := &loadAware{ClientConn: cc, newPicker: b.newPicker, byAddr: map[string]*addrState{}}
	lb.child = endpointsharding.NewBalancer(lb, opts, balancer.Get(pickfirst.Name).Build, endpointsharding.Options{})
	return lb
}

// addrState is one address's stats and heartbeat watch. gRPC stops the
// watch (closes the producer) when the subchannel changes state.
type addrState struct {
	stats    stats
	liveness atomic.Pointer[liveness]
}

// loadAware runs a pick_first child per instance (endpointsharding) and
// replaces the child's round-robin picker with its own.
type loadAware struct {
	balancer.ClientConn // intercepts NewSubConn and UpdateState
	child               balancer.Balancer
	newPicker           func([]endpoint) balancer.Picker

	mu     sync.Mutex
	byAddr map[string]*addrState
}

func (lb *loadAware) UpdateClientConnState(s balancer.ClientConnState) error {
	return lb.child.UpdateClientConnState(balancer.ClientConnState{
		ResolverState: pickfirst.EnableHealthListener(s.ResolverState),
	})
}

func (lb *loadAware) ResolverError(err error) { lb.child.ResolverError(err) }
func (lb *loadAware) ExitIdle()               { lb.child.ExitIdle() }

func (lb *loadAware) UpdateSubConnState(balancer.SubConn, balancer.SubConnState) {}

func (lb *loadAware) Close() { lb.child.Close() }

func (lb *loadAware) state(addr string) *addrState {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	st, ok := lb.byAddr[addr]
	if !ok {
		st = &addrState{}
		lb.byAddr[addr] = st
	}
	return st
}

// NewSubConn watches the heartbeat of every subchannel the children
// create, each time it becomes ready (gRPC closes producers on every state
// change), and forgets the address when the subchannel shuts down.
func (lb *loadAware) NewSubConn(addrs []resolver.Address, opts balancer.NewSubConnOptions) (balancer.SubConn, error) {
	if len(addrs) == 0 {
		return lb.ClientConn.NewSubConn(addrs, opts)
	}
	addr := addrs[0].Addr
	st := lb.state(addr)
	var sc balancer.SubConn
	listener := opts.StateListener
	opts.StateListener = func(s balancer.SubConnState) {
		switch s.ConnectivityState {
		case connectivity.Ready:
			p, _ := sc.GetOrBuildProducer(livenessProducer)
			st.liveness.Store(p.(*liveness))
		case connectivity.Shutdown:
			lb.mu.Lock()
			if lb.byAddr[addr] == st {
				delete(lb.byAddr, addr)
			}
			lb.mu.Unlock()
		}
		if listener != nil {
			listener(s)
		}
	}
	var err error
	sc, err = lb.ClientConn.NewSubConn(addrs, opts)
	return sc, err
}

// UpdateState turns the children's state into a load-aware picker over
// the ready instances; with none ready it passes the children's on.
func (lb *loadAware) UpdateState(state balancer.State) {
	var ready []endpoint
	for _, child := range endpointsharding.ChildStatesFromPicker(state.Picker) {
		if child.State.ConnectivityState != connectivity.Ready || len(child.Endpoint.Addresses) == 0 {
			continue
		}
		st := lb.state(child.Endpoint.Addresses[0].Addr)
		ready = append(ready, endpoint{
			picker:   child.State.Picker,
			weight:   weightOf(child.Endpoint),
			stats:    &st.stats,
			liveness: st.liveness.Load,
		})
	}
	if len(ready) == 0 {
		lb.ClientConn.UpdateState(state)
		return
	}
	lb.ClientConn.UpdateState(balancer.State{ConnectivityState: connectivity.Ready, Picker: lb.newPicker(ready)})
}

// live returns the endpoints whose heartbeat has not stopped, or all of
// them when every one has (better a stalled instance than none).
func live(eps []endpoint, now time.Time) []endpoint {
	stalled := func(ep endpoint) bool { l := ep.liveness(); return l != nil && l.stalled(now) }
	first := slices.IndexFunc(eps, stalled)
	if first < 0 {
		return eps // the usual case: no copy
	}
	out := make([]endpoint, 0, len(eps)-1)
	for _, ep := range eps {
		if !stalled(ep) {
			out = append(out, ep)
		}
	}
	if len(out) == 0 {
		return eps
	}
	return out
}
