package balance

import (
	"math/rand/v2"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/serviceconfig"
)

// p2cPicker draws two candidate instances at random, each with a
// probability proportional to its registered weight, and takes the first
// unless its cost is more than SlowFactor times the second's. An
// instance's cost is its latency estimate times (1 + InflightFactor x
// calls in flight per unit of weight). So equally fast instances get calls in proportion to
// their weights; a slow one (10x) gets almost none; one whose calls pile
// up (a deadlocked handler, a stopped process before its heartbeat is
// overdue) soon loses every comparison; a stalled one gets none; and a new
// one starts from its peers' estimate, not from zero, so it takes no burst.
type p2cPicker struct {
	eps []endpoint
	cfg *P2CConfig
}

func newP2CPicker(eps []endpoint, cfg serviceconfig.LoadBalancingConfig) balancer.Picker {
	c, ok := cfg.(*P2CConfig)
	if !ok {
		d, _ := parseP2CConfig(nil)
		c = d.(*P2CConfig)
	}
	return &p2cPicker{eps: eps, cfg: c}
}

func (p *p2cPicker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	a := attemptFrom(info.Ctx)
	eps := candidates(p.eps, a, sinceEpoch())
	i := pickWeighted(eps, -1)
	chosen := eps[i]
	if len(eps) > 1 && rand.Float64() >= p.cfg.ExploreShare {
		other := eps[pickWeighted(eps, i)]
		if cost(chosen, p.cfg.InflightFactor) > p.cfg.SlowFactor*cost(other, p.cfg.InflightFactor) {
			chosen = other
		}
	}
	return track(chosen, info, a, len(eps), time.Duration(p.cfg.FailurePenalty))
}

// cost is the latency estimate (at least a microsecond, so that calls in
// flight count before any answer) times 1 + f x calls in flight per unit
// of weight.
func cost(ep endpoint, f float64) float64 {
	lat := max(float64(ep.stats.ewmaNs.Load()), 1e3)
	return lat * (1 + f*float64(ep.stats.inflight.Load())/float64(ep.weight))
}

// pickWeighted draws an index with probability proportional to weight,
// skipping index skip.
func pickWeighted(eps []endpoint, skip int) int {
	total := uint64(0)
	for i, ep := range eps {
		if i != skip {
			total += uint64(ep.weight)
		}
	}
	n := rand.Uint64N(total)
	for i, ep := range eps {
		if i == skip {
			continue
		}
		if n < uint64(ep.weight) {
			return i
		}
		n -= uint64(ep.weight)
	}
	return len(eps) - 1
}
