package balance

import (
	"context"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/balancer"

	"github.com/rollcall/rollcall/pkg/liveness"
)

// MaxAvoid is how many instances one attempt can be asked to avoid.
const MaxAvoid = 2

// A Fleet is what one balancer knows of its instances now.
type Fleet struct {
	ready atomic.Int32
	lb    *loadAware
}

// Ready is how many instances have a ready connection; -1 once the
// balancer closed (a new one may have replaced it: gRPC's idle mode).
func (f *Fleet) Ready() int { return int(f.ready.Load()) }

// An Attempt is one attempt of a call, shared by the caller (package call)
// and rollcall's pickers through the attempt's context (WithAttempt). The
// caller says which instances to avoid and what to do when the instance
// stalls; the picker records which instance it chose. Without an Attempt
// a call is balanced the same way.
//
// Its owner ends it (End) when gRPC returns the attempt's result, and may
// then reuse it (Reset).
type Attempt struct {
	// OnStall, when set, is called when the instance this attempt is in
	// flight on stops sending heartbeats. It returns whether it cancelled
	// the attempt (the instance is then charged with a failure). It runs
	// on the heartbeat watch's goroutine and must not block.
	OnStall func(*Attempt) bool

	rec    pickRecord
	avoid  [MaxAvoid]*addrState
	picked atomic.Pointer[addrState]
	fleet  atomic.Pointer[Fleet]
	live   atomic.Int32
	cut    atomic.Int32
	next   *Attempt // in picked's list of cuttable attempts
	prev   *Attempt
}

type attemptKey struct{}

// WithAttempt returns ctx carrying a, for the pick of one attempt.
func WithAttempt(ctx context.Context, a *Attempt) context.Context {
	return context.WithValue(ctx, attemptKey{}, a)
}

func attemptFrom(ctx context.Context) *Attempt {
	if ctx == nil {
		return nil
	}
	a, _ := ctx.Value(attemptKey{}).(*Attempt)
	return a
}

// Reset clears a for another attempt; OnStall stays.
func (a *Attempt) Reset() {
	a.rec = pickRecord{}
	a.avoid = [MaxAvoid]*addrState{}
	a.picked.Store(nil)
	a.live.Store(0)
	a.cut.Store(int32(notCut))
}

// Avoid makes a's pick avoid the instance that attempt b was sent to, as
// long as another live instance is left.
func (a *Attempt) Avoid(b *Attempt) {
	st := b.picked.Load()
	if st == nil {
		return
	}
	for i, s := range a.avoid {
		if s == nil || s == st {
			a.avoid[i] = st
			return
		}
	}
}

// Picked reports whether the attempt was sent to an instance.
func (a *Attempt) Picked() bool { return a.picked.Load() != nil }

// Fleet is what the balancer that picked the attempt knows of its
// instances, nil before any pick by a rollcall policy.
func (a *Attempt) Fleet() *Fleet { return a.fleet.Load() }

// Live is how many live instances the picker chose from at the attempt's
// last pick: 0 before any pick.
func (a *Attempt) Live() int { return int(a.live.Load()) }

// Lost marks the attempt as cut because another attempt of the call
// answered first: its time so far can raise the instance's latency
// estimate, never lower it.
func (a *Attempt) Lost() { a.cut.Store(int32(lost)) }

// avoidsMax: a's call already went to MaxAvoid instances.
func (a *Attempt) avoidsMax() bool { return a != nil && a.avoid[MaxAvoid-1] != nil }

// avoidsZone: a avoids an instance of zone.
func (a *Attempt) avoidsZone(zone string) bool {
	for _, s := range a.avoid {
		if s != nil && s.zoneName() == zone {
			return true
		}
	}
	return false
}

func (a *Attempt) avoids(st *addrState) bool {
	for _, s := range a.avoid {
		if s == st {
			return true
		}
	}
	return false
}

// begin records a pick of ep for a. gRPC picks again for the same attempt
// when the chosen connection was not ready or its stream was refused
// before any byte went out: the earlier pick ends then, as one that
// reached no instance.
func (a *Attempt) begin(ep endpoint, info balancer.PickInfo, start time.Duration, live int, fleet *Fleet, penalty time.Duration) {
	if a.rec.st != nil {
		a.end(balancer.DoneInfo{})
	}
	a.fleet.Store(fleet)
	a.rec = pickRecord{st: ep.state, start: start, deadline: deadlineOf(info), penalty: penalty}
	a.picked.Store(ep.state)
	a.live.Store(int32(live))
	if a.OnStall != nil {
		ep.state.add(a)
	}
}

// End accounts for the end of the attempt on the instance it was sent to
// (nothing if none): err is what the attempt returned, nil for an answer.
// It returns liveness.Now at the end, so that the caller needs no clock
// read of its own. The attempt's owner calls it once gRPC has returned the
// attempt's result: a pick with an Attempt gives gRPC no Done callback,
// which spares gRPC building its DoneInfo and parsing a load report from
// the trailer on every call.
func (a *Attempt) End(err error) (now time.Duration) {
	if a.rec.st == nil {
		return liveness.Now()
	}
	return a.end(balancer.DoneInfo{Err: err, BytesReceived: err == nil})
}

func (a *Attempt) end(di balancer.DoneInfo) time.Duration {
	if a.OnStall != nil {
		a.rec.st.remove(a)
	}
	now := a.rec.finish(di, cut(a.cut.Load()))
	a.rec.st = nil
	return now
}

// add links a into the attempts in flight on st.
func (st *addrState) add(a *Attempt) {
	st.mu.Lock()
	a.prev, a.next = nil, st.inflight
	if st.inflight != nil {
		st.inflight.prev = a
	}
	st.inflight = a
	st.mu.Unlock()
}

func (st *addrState) remove(a *Attempt) {
	st.mu.Lock()
	if a.prev != nil {
		a.prev.next = a.next
	} else if st.inflight == a {
		st.inflight = a.next
	}
	if a.next != nil {
		a.next.prev = a.prev
	}
	a.prev, a.next = nil, nil
	st.mu.Unlock()
}

// Stalled (a liveness.Listener method) offers every attempt in flight on
// st to its caller to cut. The lock is held throughout, so an attempt
// cannot finish (and be reused) while its OnStall runs.
func (st *addrState) Stalled() {
	if st.lb != nil {
		st.lb.epoch.Add(1) // its zone loses its capacity; it counts toward panic mode
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	for a := st.inflight; a != nil; a = a.next {
		if a.OnStall(a) {
			a.cut.Store(int32(stalled))
		}
	}
}
