package balance

import (
	"math/rand/v2"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/serviceconfig"

	"github.com/rollcall/rollcall/pkg/liveness"
)

// p2cPicker draws two candidate instances at random, each with a
// probability proportional to its registered weight, and takes the first
// unless it is stuck (calls in flight and no answer for StuckFactor times
// its latency estimate) and the second is not, or its latency estimate is
// more than SlowFactor times the second's. So equally fast
// instances get calls in proportion to their weights; a slow one (10x)
// gets almost none; one whose calls pile up (a deadlocked handler, a
// stopped process before its heartbeat is overdue) soon loses every
// comparison; a stalled one gets none; and a new one starts from its
// peers' estimate, not from zero, so it takes no burst.
//
// A starting instance (slow start) is drawn by its lowered weight, and
// may be slower than the other by up to SlowFactor over its share of its
// weight before it loses: a cold instance is slow at first, and would
// otherwise lose every comparison and never warm up.
type p2cPicker struct {
	*viewer
	cfg *P2CConfig
}

func newP2CPicker(eps []endpoint, cfg serviceconfig.LoadBalancingConfig, lb *loadAware) balancer.Picker {
	c, ok := cfg.(*P2CConfig)
	if !ok {
		d, _ := parseP2CConfig(nil)
		c = d.(*P2CConfig)
	}
	return &p2cPicker{viewer: newViewer(eps, lb), cfg: c}
}

func (p *p2cPicker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	a := attemptFrom(info.Ctx)
	now := liveness.Now()
	v := p.current(now)
	eps := candidates(v.pool(p.eps), a, now, v.wider())
	chosen := eps[0]
	if len(eps) > 1 {
		i := pickWeighted(eps, -1)
		chosen = eps[i]
		if rand.Float64() >= p.cfg.ExploreShare {
			other := eps[pickWeighted(eps, i)]
			if p.worse(chosen, other, now, v.window) {
				chosen = other
			}
		}
	}
	return track(chosen, info, a, len(eps), time.Duration(p.cfg.FailurePenalty), now)
}

// minStuck is the shortest silence that makes an instance with calls in
// flight stuck: a pause of the client's own (GC) is far shorter.
const minStuck = 20 * time.Millisecond

// worse reports whether a should lose to b: it is stuck and b is not, or
// it is slower by more than SlowFactor (divided by its share of its
// weight while it starts, in a slow-start window), its estimate's excess
// over b's shrunk as the estimate goes stale (stats.freshness).
func (p *p2cPicker) worse(a, b endpoint, now, window time.Duration) bool {
	if stuckA, stuckB := p.stuck(a, now), p.stuck(b, now); stuckA != stuckB {
		return stuckA
	}
	factor := p.cfg.SlowFactor
	if window > 0 {
		share, _ := ramp(a.state, now, window)
		factor /= share
	}
	eb := b.stats.ewmaNs.Load()
	if float64(a.stats.ewmaNs.Load()) <= factor*float64(eb) {
		return false // no clock read or exp on the common path
	}
	return float64(a.stats.estimateAgainst(time.Duration(eb), now)) > factor*float64(eb)
}

// stuck: ep has calls in flight and has not answered for StuckFactor
// times its latency estimate, at least minStuck.
func (p *p2cPicker) stuck(ep endpoint, now time.Duration) bool {
	if ep.stats.inflight() == 0 {
		return false
	}
	silence := now - time.Duration(ep.stats.lastAnswer.Load())
	return silence > max(minStuck, time.Duration(p.cfg.StuckFactor*float64(ep.stats.ewmaNs.Load())))
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
