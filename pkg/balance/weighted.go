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
	mu      sync.Mutex
	eps     []endpoint
	current []int64
	penalty time.Duration
}

func newWeightedPicker(eps []endpoint, cfg serviceconfig.LoadBalancingConfig) balancer.Picker {
	penalty := time.Duration(defaultPenalty)
	if c, ok := cfg.(*WeightedConfig); ok {
		penalty = time.Duration(c.FailurePenalty)
	}
	return &weightedPicker{eps: eps, current: make([]int64, len(eps)), penalty: penalty}
}

func (p *weightedPicker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	a := attemptFrom(info.Ctx)
	now := liveness.Now()
	// The widest choice that leaves a candidate: live and not avoided,
	// then live, then every instance.
	eligible := []func(endpoint) bool{
		func(ep endpoint) bool { return !ep.isStalled(now) && (a == nil || !a.avoids(ep.state)) },
		func(ep endpoint) bool { return !ep.isStalled(now) },
		func(endpoint) bool { return true },
	}
	p.mu.Lock()
	best, n := -1, 0
	for _, ok := range eligible {
		total := int64(0)
		for i, ep := range p.eps {
			if !ok(ep) {
				continue
			}
			n++
			p.current[i] += int64(ep.weight)
			total += int64(ep.weight)
			if best < 0 || p.current[i] > p.current[best] {
				best = i
			}
		}
		if best >= 0 {
			p.current[best] -= total
			break
		}
	}
	p.mu.Unlock()
	return track(p.eps[best], info, a, n, p.penalty, now)
}

// weightOf is the weight an instance registered, 1 when it set none.
func weightOf(ep resolver.Endpoint) uint32 {
	if inst, ok := resolve.InstanceOf(ep); ok && inst.Metadata.Weight > 0 {
		return inst.Metadata.Weight
	}
	return 1
}
