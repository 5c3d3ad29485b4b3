package balance

import (
	"sync"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"

	"github.com/rollcall/rollcall/pkg/discovery/resolve"
	"github.com/rollcall/rollcall/pkg/liveness"
)

// weightedPicker is smooth weighted round robin (as in nginx): over any
// run of total-weight picks, each candidate gets exactly its weight,
// spread evenly rather than in bursts. Stalled instances sit out; when
// every instance is stalled, all of them take turns.
type weightedPicker struct {
	*viewer
	mu      sync.Mutex
	credit  []int64 // by endpoint.idx
	penalty time.Duration
}

func newWeightedPicker(eps []endpoint, cfg serviceconfig.LoadBalancingConfig, lb *loadAware) balancer.Picker {
	penalty := time.Duration(defaultPenalty)
	if c, ok := cfg.(*WeightedConfig); ok {
		penalty = time.Duration(c.FailurePenalty)
	}
	return &weightedPicker{viewer: newViewer(eps, lb), credit: make([]int64, len(eps)), penalty: penalty}
}

func (p *weightedPicker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	a := attemptFrom(info.Ctx)
	now := liveness.Now()
	v := p.current(now)
	pool := v.pool(p.eps)
	p.mu.Lock()
	// The widest choice that leaves a candidate: live and not avoided
	// (in the zones the call has not been to once it went to MaxAvoid
	// instances, as candidates says; in the zone drawn; in any), then
	// not avoided, then live, then every instance.
	var best *endpoint
	var n int
	if a.avoidsMax() && v.wider() != nil {
		best, n = p.next(keep(v.wider(), func(ep endpoint) bool { return !a.avoidsZone(ep.state.zoneName()) }), fresh, a, now)
	}
	if best == nil {
		best, n = p.next(pool, fresh, a, now)
	}
	if best == nil && v.wider() != nil {
		best, n = p.next(v.wider(), fresh, a, now)
	}
	if best == nil {
		best, n = p.next(pool, untried, a, now)
	}
	if best == nil {
		best, n = p.next(pool, live, a, now)
	}
	if best == nil {
		best, n = p.next(pool, anyOne, a, now)
	}
	ep := *best
	p.mu.Unlock()
	return track(ep, info, a, n, p.penalty, now)
}

// Which instances a round of weighted round robin takes.
const (
	fresh   = iota // live, and not avoided by the attempt
	untried        // not avoided by the attempt
	live           // heartbeat not stopped
	anyOne         // every one
)

// next runs one round of smooth weighted round robin over the endpoints
// of eps of the kind given (fresh, untried, live, anyOne), and returns the one chosen
// (nil if none) and how many took part. p.mu is held.
func (p *weightedPicker) next(eps []endpoint, kind int, a *Attempt, now time.Duration) (*endpoint, int) {
	var best *endpoint
	n, total := 0, int64(0)
	for i := range eps {
		ep := &eps[i]
		stalledOut := (kind == fresh || kind == live) && ep.isStalled(now)
		if stalledOut || (kind == fresh || kind == untried) && a != nil && a.avoids(ep.state) {
			continue
		}
		n++
		p.credit[ep.idx] += int64(ep.weight)
		total += int64(ep.weight)
		if best == nil || p.credit[ep.idx] > p.credit[best.idx] {
			best = ep
		}
	}
	if best != nil {
		p.credit[best.idx] -= total
	}
	return best, n
}

// weightOf is the weight an instance registered, 1 when it set none.
func weightOf(ep resolver.Endpoint) uint32 {
	if inst, ok := resolve.InstanceOf(ep); ok && inst.Metadata.Weight > 0 {
		return inst.Metadata.Weight
	}
	return 1
}
