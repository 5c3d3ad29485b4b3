// Package balance adds two load-aware balancing policies to gRPC. Import
// it (package call does) and name a policy in the service config:
//
//	{"loadBalancingConfig":[{"rollcall_p2c_ewma":{}}]}
//
// Policies (their JSON fields: P2CConfig, WeightedConfig; ParseConfig
// rejects a field it does not know):
//
//   - rollcall_p2c_ewma (P2CEWMA): power of two choices, drawn by registered
//     weight (discovery.Metadata.Weight) and compared by an asymmetric EWMA
//     of latency, unless one has calls in flight and no answer for a while
//     (stuck); a small share of picks skips the comparison, so a slow
//     instance is noticed when it recovers. For unequal or stalling
//     instances.
//   - rollcall_weighted (Weighted): smooth weighted round robin by the
//     registered weight. It keeps the same latency figures, but picks by
//     weight alone.
//
// Both run grpc-go's pick_first per instance (so client health checking
// works) and pick among the ready ones. A new instance, and one that beats
// again after a stall, starts from its peers' mean latency, not from zero.
// While one instance alone is ready there is no choice to make: a call
// made in one attempt is counted, not timed, and the instance starts from
// no estimate when another is ready.
// Only what says something about an instance counts against it
// (UNAVAILABLE, RESOURCE_EXHAUSTED, running out of time while the caller
// still had time, a stall), as at least FailurePenalty; every other code
// is an answer, with its latency.
//
// Both skip an instance whose heartbeat stopped (a stopped or stuck
// process: see package liveness) until it beats again, unless every
// instance stopped.
//
// When most or all instances leave the resolver's list at once while
// their connections are ready and serving (their keys expired because
// they lost etcd, not because they stopped), both keep them for
// VanishGrace.
//
// Both manage traffic as Envoy does (Traffic; each part can be turned
// off): zone-aware routing with failover, when the client's zone is set
// (zone.go); outlier ejection, with a panic threshold past which ejection
// gives way to balancing over every instance (outlier.go); slow start of
// an instance that joins while others serve (slowstart.go). With every
// instance healthy, one zone and none starting, a pick costs what it did
// without them (view.go). An Observer (WithObserver) reads what they do,
// for metrics.
//
// A caller can steer and follow each attempt of a call through an Attempt
// in the attempt's context (WithAttempt; package call does): which
// instances the pick avoids (Avoid), what happens to the attempts in
// flight on an instance that stalls (OnStall: the caller may cut them),
// an attempt that lost to another of the same call (Lost), and what the
// pick saw (Picked, Live, Fleet).
package balance

import (
	"encoding/json"
	"log/slog"
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

	"github.com/rollcall/rollcall/pkg/liveness"
)

// Policy names.
const (
	P2CEWMA  = "rollcall_p2c_ewma"
	Weighted = "rollcall_weighted"
)

func init() {
	balancer.Register(builder{name: P2CEWMA, parse: parseP2CConfig, newPicker: newP2CPicker})
	balancer.Register(builder{name: Weighted, parse: parseWeightedConfig, newPicker: newWeightedPicker})
}

// endpoint is what a picker knows of one ready instance.
type endpoint struct {
	picker balancer.Picker // the instance's pick_first picker
	// weight is the registered weight; in a view with an instance in slow
	// start, every weight is scaled by rampScale and the starting ones'
	// lowered.
	weight uint32
	idx    int32 // its index in the picker's instances (newViewer sets it)
	state  *addrState
	stats  *stats // &state.stats
	fleet  *Fleet
}

type builder struct {
	name      string
	parse     func(json.RawMessage) (serviceconfig.LoadBalancingConfig, error)
	newPicker func(eps []endpoint, cfg serviceconfig.LoadBalancingConfig, lb *loadAware) balancer.Picker
}

func (b builder) Name() string { return b.name }

func (b builder) ParseConfig(js json.RawMessage) (serviceconfig.LoadBalancingConfig, error) {
	return b.parse(js)
}

func (b builder) Build(cc balancer.ClientConn, opts balancer.BuildOptions) balancer.Balancer {
	cfg, _ := b.parse(nil) // the defaults, until the service config's arrives
	lb := &loadAware{ClientConn: cc, builder: b, cfg: cfg, byAddr: map[string]*addrState{}, target: opts.Target.String(),
		zoneOf: map[string]string{}, listed: map[string]bool{}, arrivals: map[string]bool{}}
	lb.fleet.lb = lb
	lb.setTraffic(cfg)
	lb.child = endpointsharding.NewBalancer(lb, opts, balancer.Get(pickfirst.Name).Build, endpointsharding.Options{})
	return lb
}

// loadAware runs a pick_first child per instance (endpointsharding) and
// replaces the child's round-robin picker with its own.
type loadAware struct {
	balancer.ClientConn // intercepts NewSubConn and UpdateState
	child               balancer.Balancer
	builder             builder

	fleet Fleet

	target string
	logger *slog.Logger // nil: slog.Default(), read when it logs

	// traffic is the config's Traffic, read on the attempt path.
	traffic atomic.Pointer[trafficConfig]
	// epoch changes when what picks choose from changes while the picker
	// stays (an ejection, a stall, panic mode): pickers rebuild their view.
	epoch atomic.Uint64
	panic atomic.Bool

	mu       sync.Mutex
	cfg      serviceconfig.LoadBalancingConfig
	byAddr   map[string]*addrState
	ready    map[string]bool // addresses whose connection is ready and serving
	vanished vanished
	expiry   *time.Timer // asks the resolver again when a kept instance's grace ends
	closed   bool
	observed *observed // who reads the balancer's figures, if anyone

	zoneOf      map[string]string // each address's zone, from the resolver's list
	zones       int               // distinct zones of the list, the client's included
	listed      map[string]bool   // addresses of the resolver's list (and kept beside it)
	arrivals    map[string]bool   // listed while another instance was ready: to start slowly
	readySince  time.Duration     // when the first instance was ready (liveness.Now); 0: none is
	nextReturn  time.Duration     // when the first ejection ends
	panics      int64             // times panic mode began
	panicLogged time.Duration
	ejections   [2]int64 // ejections so far, of local and other instances
	retired     [2]int64 // calls of instances no longer kept, local and other
}

// trafficConfig is Traffic as the balancer applies it.
type trafficConfig struct {
	Traffic
	slowFactor float64 // beyond this many times its peers' latency, an instance is slow
}

func (lb *loadAware) setTraffic(cfg serviceconfig.LoadBalancingConfig) {
	t, slow := trafficOf(cfg)
	lb.traffic.Store(&trafficConfig{Traffic: t, slowFactor: slow})
}

func (lb *loadAware) UpdateClientConnState(s balancer.ClientConnState) error {
	lb.mu.Lock()
	if s.BalancerConfig != nil {
		lb.cfg = s.BalancerConfig
		lb.setTraffic(lb.cfg)
		for _, st := range lb.byAddr {
			st.out.windowEnd.Store(0) // the rules may have changed: every answer counts until an interval begins
		}
	}
	tell := lb.observe(s.ResolverState.Attributes)
	kept := lb.vanished.update(s.ResolverState.Endpoints, lb.ready, time.Now(), vanishGrace(lb.cfg), lb.target)
	lb.armExpiry()
	lb.learnZones(s.ResolverState.Endpoints, kept)
	lb.noteArrivals(lb.zoneOf)
	lb.reconcile(liveness.Now())
	lb.epoch.Add(1) // the client's zone, the zones or the config may have changed
	lb.mu.Unlock()
	tell()
	rs := s.ResolverState
	if len(kept) > 0 {
		rs.Endpoints = append(slices.Clone(rs.Endpoints), kept...)
	}
	return lb.child.UpdateClientConnState(balancer.ClientConnState{ResolverState: pickfirst.EnableHealthListener(rs)})
}

// armExpiry makes the resolver send its list again when the first kept
// instance's grace ends, so the update that drops it comes even if etcd's
// list does not change. Called with lb.mu held.
func (lb *loadAware) armExpiry() {
	if lb.expiry != nil {
		lb.expiry.Stop()
		lb.expiry = nil
	}
	if at := lb.vanished.nextExpiry(); !at.IsZero() && !lb.closed {
		lb.expiry = time.AfterFunc(time.Until(at)+10*time.Millisecond, func() {
			lb.ClientConn.ResolveNow(resolver.ResolveNowOptions{})
		})
	}
}

func (lb *loadAware) ResolverError(err error) { lb.child.ResolverError(err) }
func (lb *loadAware) ExitIdle()               { lb.child.ExitIdle() }

func (lb *loadAware) UpdateSubConnState(balancer.SubConn, balancer.SubConnState) {}

func (lb *loadAware) Close() {
	lb.mu.Lock()
	obs := lb.observed
	lb.observed = nil
	lb.mu.Unlock()
	if obs != nil {
		obs.obs.BalancerClosed(obs.service, &lb.fleet) // while its figures can still be read
	}
	lb.mu.Lock()
	lb.closed = true
	if lb.expiry != nil {
		lb.expiry.Stop()
	}
	lb.mu.Unlock()
	lb.fleet.ready.Store(-1) // gone: whoever kept it must learn the new one
	lb.child.Close()
}

func (lb *loadAware) state(addr string) *addrState {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	st, ok := lb.byAddr[addr]
	if !ok {
		st = &addrState{lb: lb}
		st.setZone(lb.zoneOf[addr])
		st.stats.lastAnswer.Store(int64(liveness.Now())) // silence counts from its arrival
		lb.byAddr[addr] = st
	}
	return st
}

// NewSubConn watches the heartbeat of every subchannel the children
// create, each time it becomes ready (gRPC closes producers on every state
// change), and forgets the address when the subchannel shuts down.
func (lb *loadAware) NewSubConn(addrs []resolver.Address, opts balancer.NewSubConnOptions) (balancer.SubConn, error) {
	if len(addrs) == 0 {
		//lint:ignore SA1019 the children create their subchannels through this method; wrapping it is how the parent sees them
		return lb.ClientConn.NewSubConn(addrs, opts)
	}
	addr := addrs[0].Addr
	st := lb.state(addr)
	var sc balancer.SubConn
	listener := opts.StateListener
	opts.StateListener = func(s balancer.SubConnState) {
		switch s.ConnectivityState {
		case connectivity.Ready:
			st.watch(liveness.WatchSubConn(sc))
			lb.becameReady(addr, st, liveness.Now())
		case connectivity.Shutdown:
			lb.mu.Lock()
			if lb.byAddr[addr] == st {
				delete(lb.byAddr, addr)
				lb.retired[lb.localIndex(st)] += st.stats.ended.Load()
			}
			lb.mu.Unlock()
		}
		if listener != nil {
			listener(s)
		}
	}
	var err error
	//lint:ignore SA1019 as above
	sc, err = lb.ClientConn.NewSubConn(addrs, opts)
	return sc, err
}

// UpdateState turns the children's state into a load-aware picker over
// the ready instances; with none ready it passes the children's on.
func (lb *loadAware) UpdateState(state balancer.State) {
	var ready []endpoint
	readyAddrs := map[string]bool{}
	for _, child := range endpointsharding.ChildStatesFromPicker(state.Picker) {
		if child.State.ConnectivityState != connectivity.Ready || len(child.Endpoint.Addresses) == 0 {
			continue
		}
		readyAddrs[child.Endpoint.Addresses[0].Addr] = true
		st := lb.state(child.Endpoint.Addresses[0].Addr)
		ready = append(ready, endpoint{
			picker: child.State.Picker,
			weight: weightOf(child.Endpoint),
			state:  st,
			stats:  &st.stats,
			fleet:  &lb.fleet,
		})
	}
	lb.fleet.ready.Store(int32(len(ready)))
	lb.mu.Lock()
	lb.ready = readyAddrs
	if len(ready) == 0 {
		lb.readySince = 0 // none serves: those that come are all new
	}
	cfg := lb.cfg
	lb.mu.Unlock()
	if len(ready) == 0 {
		lb.ClientConn.UpdateState(state)
		return
	}
	if len(ready) > 1 {
		retime(ready, liveness.Now())
	}
	seed(ready)
	var picker balancer.Picker = lb.builder.newPicker(ready, cfg, lb)
	if len(ready) == 1 {
		picker = &soloPicker{ep: ready[0], policy: picker}
	}
	lb.ClientConn.UpdateState(balancer.State{ConnectivityState: connectivity.Ready, Picker: picker})
}

// soloPicker picks while one instance is ready. There is no choice to
// make, so a call its caller makes in one attempt (no Attempt in its
// context) is only counted: no clock read, no latency sample, no Done
// callback, which would cost the call about 1 % more than a plain
// connection's. Attempts go through the policy's picker, to be followed.
// When another instance is ready, the one that served alone starts again
// from no estimate (retime), as a new one does.
type soloPicker struct {
	ep     endpoint
	policy balancer.Picker
}

func (p *soloPicker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	if attemptFrom(info.Ctx) != nil {
		return p.policy.Pick(info)
	}
	res, err := p.ep.picker.Pick(info)
	if err != nil {
		return res, err
	}
	st := p.ep.stats
	st.picked.Add(1)
	st.ended.Add(1)
	if !st.untimed.Load() { // a load first: one shared word, seldom written
		st.untimed.Store(true)
	}
	return res, nil
}

// retime gives every instance of eps that served calls alone, untimed,
// no estimate and a fresh start: what it knew before then is stale, and
// its silence since is no stall.
func retime(eps []endpoint, now time.Duration) {
	for _, ep := range eps {
		if st := ep.stats; st.untimed.Load() && st.untimed.Swap(false) {
			st.sampled.Store(false)
			st.ewmaNs.Store(0)
			st.lastAnswer.Store(int64(now))
		}
	}
}

// candidates returns the endpoints of pool an attempt may go to: those
// whose heartbeat has not stopped, less those the attempt avoids (a). Each
// filter applies only while it leaves an endpoint: better a stalled or
// avoided instance than none, and a stalled one the call has not tried
// than one it has. In a zoned view (wider holds every zone's instances),
// an attempt that would have only instances it avoids or stalled ones
// looks in every zone; and one whose call already went to MaxAvoid instances
// (a retry or hedge after two attempts that did not answer) looks in the
// zones they were not in, if any: the call's last attempt should not go
// where a whole zone may have just gone down (Envoy's previous-priorities
// retry). The usual case copies nothing.
func candidates(pool []endpoint, a *Attempt, now time.Duration, wider []endpoint) []endpoint {
	if a.avoidsMax() && wider != nil {
		if other := keep(wider, func(ep endpoint) bool { return !a.avoidsZone(ep.state.zoneName()) }); len(other) > 0 {
			return candidates(other, a, now, nil)
		}
	}
	if a != nil && a.avoid[0] != nil {
		// An instance the call has not tried, stalled or not, before one
		// it has: a hedge sent where the call already waits is wasted.
		untried := keep(pool, func(ep endpoint) bool { return !a.avoids(ep.state) })
		if live := keep(untried, func(ep endpoint) bool { return !ep.isStalled(now) }); len(live) > 0 {
			return live
		}
		if wider != nil {
			return candidates(wider, a, now, nil)
		}
		if len(untried) > 0 {
			return untried
		}
	}
	if anyStalled(pool, now) {
		return filter(pool, func(ep endpoint) bool { return !ep.isStalled(now) })
	}
	return pool
}

// anyStalled reports whether an instance of eps is stalled at now. On every
// pick: a loop that copies no endpoint.
func anyStalled(eps []endpoint, now time.Duration) bool {
	for i := range eps {
		if eps[i].state.stalledAt(now) {
			return true
		}
	}
	return false
}

// filter returns the endpoints keep accepts, or eps if it accepts none.
func filter(eps []endpoint, accept func(endpoint) bool) []endpoint {
	if out := keep(eps, accept); len(out) > 0 {
		return out
	}
	return eps
}

// keep returns the endpoints accept accepts, in a new slice.
func keep(eps []endpoint, accept func(endpoint) bool) []endpoint {
	out := make([]endpoint, 0, len(eps))
	for _, ep := range eps {
		if accept(ep) {
			out = append(out, ep)
		}
	}
	return out
}

func (ep endpoint) isStalled(now time.Duration) bool { return ep.state.stalledAt(now) }

// track picks ep through its pick_first picker and accounts for the
// attempt until its Done, or its Attempt's End: calls in flight, and the
// latency or failure it ends with. live is how many instances the pick
// chose from.
func track(ep endpoint, info balancer.PickInfo, a *Attempt, live int, penalty, start time.Duration) (balancer.PickResult, error) {
	res, err := ep.picker.Pick(info)
	if err != nil {
		return res, err
	}
	ep.stats.picked.Add(1)
	if a != nil {
		a.begin(ep, info, start, live, ep.fleet, penalty)
		return res, nil // the child's Done, if any, as it is
	}
	st, deadline, child := ep.state, deadlineOf(info), res.Done
	res.Done = func(di balancer.DoneInfo) {
		rec := pickRecord{st: st, start: start, deadline: deadline, child: child, penalty: penalty}
		rec.finish(di, notCut)
	}
	return res, nil
}

// deadlineOf is the caller's deadline on liveness.Now's clock, zero if
// none.
func deadlineOf(info balancer.PickInfo) time.Duration {
	if info.Ctx == nil {
		return 0
	}
	d, ok := info.Ctx.Deadline()
	if !ok {
		return 0
	}
	return liveness.At(d)
}
