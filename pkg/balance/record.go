package balance

import (
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rollcall/rollcall/pkg/liveness"
)

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
	start    time.Duration // on liveness.Now's clock
	deadline time.Duration // the caller's, on the same clock; zero if none
	child    func(balancer.DoneInfo)
	penalty  time.Duration
}

// finish accounts for the pick's end, and returns the time it read.
func (r *pickRecord) finish(di balancer.DoneInfo, c cut) (now time.Duration) {
	now = liveness.Now()
	st := &r.st.stats
	st.ended.Add(1)
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
	if di.Err == nil && di.BytesReceived && c == notCut {
		r.st.answered(now) // the usual end, without a call
	} else {
		r.st.account(outcomeOf(di, c), now)
	}
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
		return now
	case atLeast:
		// A time with no answer is a lower bound: taken as a sample it
		// would pull a slow instance's estimate down.
		if st.sampled.Load() && int64(sample) <= st.ewmaNs.Load() {
			return now
		}
	case failed:
		sample = max(sample, r.penalty)
	}
	st.observe(sample)
	return now
}
