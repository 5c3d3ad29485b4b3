package balance

import (
	"sync"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/resolver"

	"github.com/rollcall/rollcall/pkg/discovery/resolve"
)

// weightedPicker is smooth weighted round robin (as in nginx): over any
// run of total-weight picks, each instance gets exactly its weight, spread
// evenly rather than in bursts.
type weightedPicker struct {
	mu      sync.Mutex
	eps     []endpoint
	current []int64
}

func newWeightedPicker(eps []endpoint) balancer.Picker {
	return &weightedPicker{eps: eps, current: make([]int64, len(eps))}
}

func (p *weightedPicker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	now := time.Now()
	p.mu.Lock()
	best, total := -1, int64(0)
	for i, ep := range p.eps {
		if l := ep.liveness(); l != nil && l.stalled(now) {
			continue
		}
		w := int64(ep.weight)
		p.current[i] += w
		total += w
		if best < 0 || p.current[i] > p.current[best] {
			best = i
		}
	}
	if best < 0 { // every instance stalled: fall back to the first
		best = 0
	} else {
		p.current[best] -= total
	}
	ep := p.eps[best]
	p.mu.Unlock()
	return track(ep, info, now)
}

// weightOf is the weight an instance registered, 1 when it set none.
func weightOf(ep resolver.Endpoint) uint32 {
	if inst, ok := resolve.InstanceOf(ep); ok && inst.Metadata.Weight > 0 {
		return inst.Metadata.Weight
	}
	return 1
}
