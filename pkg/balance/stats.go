package balance

import (
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The latency estimate is an asymmetric EWMA that follows an instance's
// fastest answers: it falls quickly (weight down) and rises slowly (weight
// up). Queueing on a saturated client or machine delays every instance's
// answers alike and moves it little, while an instance that is slower at
// its work, or fails, keeps it high.
const (
	weightDown = 0.5
	weightUp   = 0.05
)

// addrState is what the balancer keeps of one address across picker
// updates: its figures, its heartbeat watch, and the attempts in flight on
// it that may be cut when it stalls.
type addrState struct {
	stats    stats
	liveness atomic.Pointer[liveness]
	lb       *loadAware // the balancer that keeps it

	mu       sync.Mutex
	inflight *Attempt // list of cuttable attempts, linked through Attempt.next
}

// stats are one instance's figures.
type stats struct {
	inflight atomic.Int64
	ewmaNs   atomic.Int64 // latency estimate, nanoseconds; 0 = none yet
	// sampled: the estimate comes from the instance's own answers, not
	// from its peers' (see seed).
	sampled atomic.Bool
	// lastAnswer is sinceEpoch at the instance's last answer (or failure
	// it reported), and when it joined before any.
	lastAnswer atomic.Int64
}

// seed gives an instance that has not answered yet the mean estimate of
// those that have, so that it neither wins every comparison (0) nor loses
// every one until its first answer.
func seed(eps []endpoint) {
	var sum, n int64
	for _, ep := range eps {
		if ep.stats.sampled.Load() {
			sum += ep.stats.ewmaNs.Load()
			n++
		}
	}
	if n == 0 {
		return
	}
	for _, ep := range eps {
		if !ep.stats.sampled.Load() {
			ep.stats.ewmaNs.CompareAndSwap(0, sum/n)
		}
	}
}

// resumed: st beats again after a stall. What its estimate learnt from the
// attempts the stall held says nothing of it now: it starts again from its
// peers' estimate, as a new instance does.
func (st *addrState) resumed() {
	if st.lb == nil {
		return
	}
	st.lb.mu.Lock()
	var sum, n int64
	for _, peer := range st.lb.byAddr {
		if peer != st && peer.stats.sampled.Load() {
			sum += peer.stats.ewmaNs.Load()
			n++
		}
	}
	st.lb.mu.Unlock()
	if n > 0 {
		st.stats.ewmaNs.Store(sum / n)
		st.stats.sampled.Store(false)
	}
}

// verdict is what one finished attempt says about its instance.
type verdict int

const (
	ignored  verdict = iota // nothing: the caller gave up, or the attempt never reached the instance
	answered                // an answer, whatever its code: its latency counts
	atLeast                 // no answer when it ended: its time so far can only raise the estimate
	failed                  // a failure of the instance: counts as at least the failure penalty
)

// cut says why an attempt was cancelled by the caller's own machinery.
type cut int32

const (
	notCut  cut = iota
	stalled     // its instance stopped sending heartbeats
	lost        // another attempt of the call answered first
)

// judge classifies a finished attempt. Only what says something about the
// instance counts against it: UNAVAILABLE, RESOURCE_EXHAUSTED (overload,
// connection errors), a deadline the instance ran out of while the caller
// still had time, and a stall. Every other code is the application's
// answer, with its latency.
func judge(di balancer.DoneInfo, c cut, callerHadTime bool) verdict {
	switch c {
	case stalled:
		return failed
	case lost:
		return atLeast
	}
	if di.Err == nil {
		if !di.BytesReceived {
			return ignored // gRPC picked again before sending anything
		}
		return answered
	}
	switch status.Code(di.Err) {
	case codes.Canceled:
		return ignored
	case codes.DeadlineExceeded:
		if callerHadTime {
			return failed
		}
		return atLeast // it took at least the caller's whole deadline
	case codes.Unavailable, codes.ResourceExhausted:
		return failed
	}
	return answered
}

// pickRecord is one pick being tracked until its Done.
type pickRecord struct {
	st       *addrState
	start    time.Duration // sinceEpoch
	deadline time.Duration // the caller's, sinceEpoch; zero if none
	child    func(balancer.DoneInfo)
	penalty  time.Duration
}

// finish accounts for the pick's end.
func (r *pickRecord) finish(di balancer.DoneInfo, c cut) {
	now := sinceEpoch()
	st := &r.st.stats
	st.inflight.Add(-1)
	if r.child != nil {
		r.child(di)
	}
	// A deadline that expired at the instance a little before the
	// caller's own (clock skew, transit) is the caller's deadline: only a
	// clear margin says the instance ran out of time on its own.
	hadTime := false
	if r.deadline != 0 {
		total := r.deadline - r.start
		hadTime = r.deadline-now > max(10*time.Millisecond, total/10)
	}
	sample := now - r.start
	v := judge(di, c, hadTime)
	if v == answered || v == failed {
		// To the millisecond: a store per answer would have every caller's
		// goroutine write one shared word.
		if t := int64(now); t-st.lastAnswer.Load() > int64(time.Millisecond) {
			st.lastAnswer.Store(t)
		}
	}
	switch v {
	case ignored:
		return
	case atLeast:
		// A time with no answer is a lower bound: taken as a sample it
		// would pull a slow instance's estimate down.
		if st.sampled.Load() && int64(sample) <= st.ewmaNs.Load() {
			return
		}
	case failed:
		sample = max(sample, r.penalty)
	}
	st.observe(sample)
}

// observe folds one latency sample into the estimate.
func (st *stats) observe(sample time.Duration) {
	if !st.sampled.Load() && st.sampled.CompareAndSwap(false, true) {
		st.ewmaNs.Store(int64(sample)) // the first answer replaces a seeded estimate
		return
	}
	for {
		old := st.ewmaNs.Load()
		w := weightUp
		if float64(sample) < float64(old) {
			w = weightDown
		}
		next := int64((1-w)*float64(old) + w*float64(sample))
		if st.ewmaNs.CompareAndSwap(old, next) {
			return
		}
	}
}
