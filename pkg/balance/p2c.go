package balance

import (
	"math/rand/v2"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"time"

	"google.golang.org/grpc/balancer"
)

// The latency estimate is an asymmetric EWMA that follows an instance's
// fastest answers: it falls quickly (weight down) and rises slowly (weight
// up). Queueing on a saturated client or machine delays every instance's
// answers alike and moves it little, while an instance that is slower at
// its work (or fails: a failure counts as a 1 s answer) keeps it high.
const (
	weightDown = 0.5
	weightUp   = 0.05
)

// slowFactor: an instance whose latency estimate is this many times
// another's loses to it. Closer than that, instances count as equally
// fast and the registered weights decide.
const slowFactor = 2.0

// explore is the share of picks that skip the comparison, so an instance
// that was slow keeps being sampled and is noticed when it recovers.
const explore = 0.005

// p2cPicker draws two live instances at random, each with a probability
// proportional to its registered weight, and takes the first unless its
// EWMA latency is more than slowFactor times the second's. So equally
// fast instances get calls in proportion to their weights; a slow one
// (10x) gets almost none; a stalled one gets none once its heartbeat stops,
// and until then its calls in flight time out and push its EWMA up.
type p2cPicker struct{ eps []endpoint }

func newP2CPicker(eps []endpoint) balancer.Picker { return &p2cPicker{eps: eps} }

func (p *p2cPicker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	now := time.Now()
	eps := live(p.eps, now)
	i := pickWeighted(eps, -1)
	chosen := eps[i]
	if len(eps) > 1 && rand.Float64() >= explore {
		other := eps[pickWeighted(eps, i)]
		if latency(chosen) > slowFactor*latency(other) {
			chosen = other
		}
	}
	return track(chosen, info, now)
}

// latency is the instance's latency estimate.
func latency(ep endpoint) float64 { return float64(ep.stats.ewmaNs.Load()) }

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

// track picks through ep's pick_first picker and accounts for the call.
func track(ep endpoint, info balancer.PickInfo, start time.Time) (balancer.PickResult, error) {
	res, err := ep.picker.Pick(info)
	if err != nil {
		return res, err
	}
	st := ep.stats
	st.inflight.Add(1)
	done := res.Done
	res.Done = func(di balancer.DoneInfo) {
		st.inflight.Add(-1)
		defer func() {
			if done != nil {
				done(di)
			}
		}()
		sample := time.Since(start)
		switch status.Code(di.Err) {
		case codes.OK:
		case codes.Canceled:
			return // the caller gave up: that says nothing of the instance
		default:
			// A failed or timed-out call says the instance is worse than
			// its latency: count it as slow as a second.
			sample = max(sample, time.Second)
		}
		for {
			old := st.ewmaNs.Load()
			w := weightUp
			if float64(sample) < float64(old) {
				w = weightDown
			}
			next := int64(float64(sample))
			if old != 0 {
				next = int64((1-w)*float64(old) + w*float64(sample))
			}
			if st.ewmaNs.CompareAndSwap(old, next) {
				break
			}
		}
	}
	return res, nil
}
