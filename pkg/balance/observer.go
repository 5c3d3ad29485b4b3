package balance

import (
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/attributes"
	"google.golang.org/grpc/resolver"

	"github.com/rollcall/rollcall/pkg/liveness"
)

// An Observer is told of each balancer of a rollcall policy that a
// connection starts and closes, and reads its figures (Fleet.Status) when
// it wants: package balancemetrics reads them when scraped, so that picks
// pay nothing for metrics. Its methods must not block.
type Observer interface {
	BalancerStarted(service string, f *Fleet)
	BalancerClosed(service string, f *Fleet)
}

// WithObserver returns b made to tell obs of the balancers of the
// connections it resolves targets for, as service's (package call does it
// for call.WithBalanceObserver). The balancer learns of obs from the
// resolver's state: a gRPC balancer is built with nothing of the dialer's.
func WithObserver(b resolver.Builder, service string, obs Observer) resolver.Builder {
	return observedBuilder{Builder: b, o: &observed{service: service, obs: obs}}
}

// observed is the attribute value of the resolver's state that names the
// observer; a pointer, so that attributes compare it by identity.
type observed struct {
	service string
	obs     Observer
}

type observedKey struct{}

type observedBuilder struct {
	resolver.Builder
	o *observed
}

func (b observedBuilder) Build(t resolver.Target, cc resolver.ClientConn, opts resolver.BuildOptions) (resolver.Resolver, error) {
	return b.Builder.Build(t, observedConn{ClientConn: cc, o: b.o}, opts)
}

type observedConn struct {
	resolver.ClientConn
	o *observed
}

func (c observedConn) UpdateState(s resolver.State) error {
	s.Attributes = s.Attributes.WithValue(observedKey{}, c.o)
	return c.ClientConn.UpdateState(s)
}

// observe takes the observer the resolver's state names, and returns the
// calls to make, after lb.mu is released, to tell the old and new ones.
// Called with lb.mu held.
func (lb *loadAware) observe(attrs *attributes.Attributes) (tell func()) {
	o, _ := attrs.Value(observedKey{}).(*observed)
	old := lb.observed
	if o == old || lb.closed {
		return func() {}
	}
	lb.observed = o
	return func() {
		if old != nil {
			old.obs.BalancerClosed(old.service, &lb.fleet)
		}
		if o != nil {
			o.obs.BalancerStarted(o.service, &lb.fleet)
		}
	}
}

// ByZone counts in the client's zone (Local: instances in the client's
// zone and those with no zone, every instance when the client has none)
// and in the other zones.
type ByZone struct{ Local, Other int64 }

func (b *ByZone) add(other bool, n int64) {
	if other {
		b.Other += n
	} else {
		b.Local += n
	}
}

// FleetStatus is what one balancer does now.
type FleetStatus struct {
	Zone      string // the client's, "" when zone-aware routing is off
	Instances int    // in the resolver's list (and kept beside it)
	Ready     int
	// Calls are the attempts sent to the instances, counted as they end.
	Calls     ByZone
	Ejected   ByZone // instances ejected now
	Ejections ByZone // ejections so far
	Starting  ByZone // instances in slow start now
	Panic     bool   // panic mode now
	Panics    int64  // times panic mode began
}

// Status returns what the balancer does now; zero once it is closed.
func (f *Fleet) Status() FleetStatus {
	lb := f.lb
	if lb == nil {
		return FleetStatus{}
	}
	now := liveness.Now()
	lb.mu.Lock()
	defer lb.mu.Unlock()
	if lb.closed {
		return FleetStatus{}
	}
	t := lb.traffic.Load()
	s := FleetStatus{Zone: t.Zone, Instances: len(lb.byAddr), Ready: max(f.Ready(), 0), Panic: lb.panic.Load(), Panics: lb.panics,
		Calls:     ByZone{Local: lb.retired[0], Other: lb.retired[1]},
		Ejections: ByZone{Local: lb.ejections[0], Other: lb.ejections[1]}}
	for _, st := range lb.byAddr {
		other := lb.localIndex(st) == 1
		s.Calls.add(other, st.stats.ended.Load())
		if st.out.ejected(now) {
			s.Ejected.add(other, 1)
		}
		if _, starting := ramp(st, now, time.Duration(t.SlowStartWindow)); starting {
			s.Starting.add(other, 1)
		}
	}
	return s
}

// Fleets is an Observer that keeps the balancers of the connections it
// observes while they run, and sums what they do: for a status page, a
// test or a benchmark (call.WithBalanceObserver(&balance.Fleets{})).
type Fleets struct {
	mu   sync.Mutex
	list []*Fleet
}

// BalancerStarted keeps f.
func (fs *Fleets) BalancerStarted(_ string, f *Fleet) {
	fs.mu.Lock()
	fs.list = append(fs.list, f)
	fs.mu.Unlock()
}

// BalancerClosed forgets f.
func (fs *Fleets) BalancerClosed(_ string, f *Fleet) {
	fs.mu.Lock()
	fs.list = slices.DeleteFunc(fs.list, func(g *Fleet) bool { return g == f })
	fs.mu.Unlock()
}

// Len is how many balancers run now.
func (fs *Fleets) Len() int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return len(fs.list)
}

// Status sums what the balancers do now: counts added, panic mode if any
// is in it, the zone of the first that has one.
func (fs *Fleets) Status() FleetStatus {
	fs.mu.Lock()
	list := slices.Clone(fs.list)
	fs.mu.Unlock()
	var sum FleetStatus
	for _, f := range list {
		s := f.Status()
		if sum.Zone == "" {
			sum.Zone = s.Zone
		}
		sum.Instances += s.Instances
		sum.Ready += s.Ready
		sum.Panic = sum.Panic || s.Panic
		sum.Panics += s.Panics
		for _, b := range []struct {
			to   *ByZone
			from ByZone
		}{
			{&sum.Calls, s.Calls}, {&sum.Ejected, s.Ejected}, {&sum.Ejections, s.Ejections}, {&sum.Starting, s.Starting},
		} {
			b.to.Local += b.from.Local
			b.to.Other += b.from.Other
		}
	}
	return sum
}
