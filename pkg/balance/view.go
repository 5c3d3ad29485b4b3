package balance

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// A view is what a picker's picks choose from until something changes:
// its instances less the ejected ones (outlier.go), weighted for slow
// start (slowstart.go), split between zones (zone.go). It is rebuilt when
// the balancer's epoch moves (an ejection, a stall, panic mode) and when
// it expires (an ejection ends, a starting instance's weight rises, zone
// capacities are due for another look). The usual view is plain: nothing
// ejected, nothing starting, one zone; a pick then uses the picker's
// instances as they are, after two loads and two compares.
type view struct {
	epoch uint64
	until time.Duration // rebuilt at this time, whatever happens
	plain bool
	all   []endpoint // instances that may be picked, weights as picked
	// window is the slow-start window while an instance of the view is
	// starting, else 0.
	window time.Duration
	zone   *zoneRoute // nil: no zone routing
}

// forever is a view that nothing but an event expires.
const forever = time.Duration(math.MaxInt64)

// pool returns the instances a pick chooses from: in a zoned view, those
// of the zone drawn for it.
func (v *view) pool(eps []endpoint) []endpoint {
	switch {
	case v.plain:
		return eps
	case v.zone != nil:
		return v.zone.draw()
	}
	return v.all
}

// wider is where an attempt looks beyond its zone's pool (candidates):
// every instance of the view; nil when the pool already is that.
func (v *view) wider() []endpoint {
	if v.zone == nil {
		return nil
	}
	return v.all
}

// viewer keeps a picker's view.
type viewer struct {
	eps   []endpoint
	lb    *loadAware     // nil for a picker made alone, in tests: always plain
	epoch *atomic.Uint64 // &lb.epoch, or one that never moves
	view  atomic.Pointer[view]
	mu    sync.Mutex // one rebuild at a time
}

// noEpoch is the epoch of a picker without a balancer.
var noEpoch atomic.Uint64

// newViewer returns the viewer of a picker over eps, which it owns.
func newViewer(eps []endpoint, lb *loadAware) *viewer {
	for i := range eps {
		eps[i].idx = int32(i)
	}
	w := &viewer{eps: eps, lb: lb, epoch: &noEpoch}
	if lb == nil {
		w.view.Store(&view{plain: true, until: forever})
	} else {
		w.epoch = &lb.epoch
		w.view.Store(&view{}) // out of date: the first pick builds one
	}
	return w
}

// current returns the view for a pick at now, rebuilding it if it is out
// of date. Small enough to be inlined: it is on every pick.
func (w *viewer) current(now time.Duration) *view {
	if v := w.view.Load(); v.epoch == w.epoch.Load() && now < v.until {
		return v
	}
	return w.rebuild(now)
}

func (w *viewer) rebuild(now time.Duration) *view {
	w.mu.Lock()
	defer w.mu.Unlock()
	if v := w.view.Load(); v.epoch == w.epoch.Load() && now < v.until {
		return v // another pick rebuilt it
	}
	v := buildView(w.eps, w.lb.snapshot(now), now)
	w.view.Store(v)
	return v
}

// routing is what the balancer tells a view being built.
type routing struct {
	epoch      uint64
	traffic    *trafficConfig
	panic      bool
	zones      int
	nextReturn time.Duration // when the first ejection ends
}

// snapshot decides what is due (ejections over, panic mode) and returns
// the state a view is built from.
func (lb *loadAware) snapshot(now time.Duration) routing {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	lb.reconcile(now)
	return routing{epoch: lb.epoch.Load(), traffic: lb.traffic.Load(), panic: lb.panic.Load(), zones: lb.zones, nextReturn: lb.nextReturn}
}

func buildView(eps []endpoint, r routing, now time.Duration) *view {
	v := &view{epoch: r.epoch, until: forever}
	t := r.traffic
	window := time.Duration(t.SlowStartWindow)
	var ejected, starting, remote bool
	for _, ep := range eps {
		ejected = ejected || !r.panic && ep.state.out.ejected(now)
		if _, ok := ramp(ep.state, now, window); ok {
			starting = true
		}
		remote = remote || !isLocal(ep.state.zoneName(), t.Zone)
	}
	zoned := remote && !r.panic
	if ejected {
		v.until = r.nextReturn
	}
	if !ejected && !starting && !zoned {
		v.plain = true
		return v
	}
	v.all = make([]endpoint, 0, len(eps))
	for _, ep := range eps {
		if !r.panic && ep.state.out.ejected(now) {
			continue
		}
		if starting {
			share, _ := ramp(ep.state, now, window)
			ep.weight = rampWeight(ep.weight, share)
		}
		v.all = append(v.all, ep)
	}
	if len(v.all) == 0 {
		// The cap keeps this from happening; should it, better an ejected
		// instance than none.
		v.all = eps
	}
	if starting {
		v.window = window
		v.until = min(v.until, now+rampStep(window))
	}
	if zoned {
		v.zone = routeZones(v.all, t.Zone, r.zones, now, t.slowFactor)
		v.until = min(v.until, now+zoneRefresh)
	}
	return v
}
