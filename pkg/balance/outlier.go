package balance

import (
	"log/slog"
	"math"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Outlier ejection (OutlierEjection): an instance whose attempts fail with
// server-side codes far more than its peers' is left out of the picks for
// an ejection time that grows with each ejection in a row, and comes back
// on its own. At most MaxEjectionPercent of the instances are out at once;
// when fewer than PanicThreshold percent are healthy, picks ignore the
// ejections (panic mode): ejection protects the callers of a service with
// a few bad instances, and must not pile every call on the few left when
// most are bad.
//
// The attempt path only counts (atomics on the instance); what is decided
// from the counts (failing, ejected, panic) is decided under the
// balancer's lock, when a count crosses a rule's line, and applied to the
// pickers through the balancer's epoch (view.go). Ejection adds no
// attempt: a failed attempt is retried, or not, as before.

// outcome is what one finished attempt says for outlier ejection.
type outcome int8

const (
	neutral       outcome = iota // nothing: cut by the caller, or never sent
	success                      // an answer, whatever its code, unless a server failure
	serverFailure                // UNAVAILABLE, INTERNAL, UNKNOWN, DATA_LOSS
	timedOut                     // DEADLINE_EXCEEDED: counts in the failure percentage only
)

// outcomeOf classifies an attempt for outlier ejection. An application's
// codes (NOT_FOUND, INVALID_ARGUMENT, FAILED_PRECONDITION, ...) are
// answers; only codes that say the server failed count, and running out
// of time, which counts only against peers that do not (a cold instance is
// slow, not failing, until its attempts time out more than its peers').
func outcomeOf(di balancer.DoneInfo, c cut) outcome {
	if c != notCut {
		return neutral // a stall (judged by the heartbeat) or a lost hedge
	}
	if di.Err == nil {
		if !di.BytesReceived {
			return neutral
		}
		return success
	}
	switch status.Code(di.Err) {
	case codes.Canceled:
		return neutral
	case codes.DeadlineExceeded:
		return timedOut
	case codes.Unavailable, codes.Internal, codes.Unknown, codes.DataLoss:
		return serverFailure
	}
	return success
}

// outlierStats are one instance's counts for outlier ejection. The
// atomics are written by every attempt; the rest is the balancer's, under
// its lock.
type outlierStats struct {
	failures    atomic.Int64 // server failures, ever
	timeouts    atomic.Int64 // attempts that ran out of time, ever
	consecutive atomic.Int32 // server failures since the last answer
	windowEnd   atomic.Int64 // liveness.Now when the failure percentage's interval ends
	// ejectedUntil is liveness.Now when the ejection ends; 0: not ejected.
	ejectedUntil atomic.Int64

	// isFailing mirrors failing() for the pickers' views, which read it
	// without the balancer's lock.
	isFailing atomic.Bool

	// Under loadAware.mu.
	winCalls, winBad   int64         // counts when the interval began
	lastCalls, lastBad int64         // the last full interval's
	lastAt             time.Duration // when it ended; 0: none
	failingInRow       bool          // ConsecutiveFailures reached
	failingShare       bool          // FailurePercentage reached
	ejections          int           // in a row, for the ejection's length
	returnedAt         time.Duration // when the last ejection ended
}

func (o *outlierStats) failing() bool { return o.failingInRow || o.failingShare }

// setFailing sets both rules' verdicts. Called with loadAware.mu held.
func (o *outlierStats) setFailing(inRow, share bool) {
	o.failingInRow, o.failingShare = inRow, share
	o.isFailing.Store(inRow || share)
}

// restart forgets the instance's failures, so that it is judged afresh
// (when it is ejected, and when it comes back). Called with
// loadAware.mu held.
func (st *addrState) restart() {
	o := &st.out
	o.consecutive.Store(0)
	o.setFailing(false, false)
	o.winCalls, o.winBad = st.stats.ended.Load(), o.failures.Load()+o.timeouts.Load()
	o.lastAt = 0
}

func (o *outlierStats) ejected(now time.Duration) bool {
	u := o.ejectedUntil.Load()
	return u != 0 && now < time.Duration(u)
}

// answered is account for an answer, the usual end of an attempt: two
// loads, inlined, unless a failure was counted before it or the failure
// percentage's interval is over.
func (st *addrState) answered(now time.Duration) {
	if st.out.consecutive.Load() != 0 || int64(now) >= st.out.windowEnd.Load() {
		st.account(success, now)
	}
}

// account counts one finished attempt of st (stats.ended counts them
// all) and, when a count crosses a rule's line, has the balancer decide
// again.
func (st *addrState) account(o outcome, now time.Duration) {
	lb := st.lb
	if lb == nil || o == neutral {
		return
	}
	out := &st.out
	t := lb.traffic.Load()
	if t == nil || !t.OutlierEjection.enabled() {
		out.windowEnd.Store(math.MaxInt64) // answers need not come here
		return
	}
	rules := &t.OutlierEjection
	switch o {
	case success:
		// A load first: a store on every answer would have every caller's
		// goroutine write one shared word.
		if out.consecutive.Load() != 0 && int(out.consecutive.Swap(0)) >= rules.ConsecutiveFailures && rules.ConsecutiveFailures > 0 {
			lb.decide(st, now)
		}
	case serverFailure:
		out.failures.Add(1)
		if n := int(out.consecutive.Add(1)); n == rules.ConsecutiveFailures {
			lb.decide(st, now)
		}
	case timedOut:
		out.timeouts.Add(1)
	}
	switch {
	case rules.FailurePercentage <= 0:
		out.windowEnd.Store(math.MaxInt64) // no interval to end
	case int64(now) >= out.windowEnd.Load():
		lb.endInterval(st, now)
	}
}

// decide takes st's consecutive failures into account, and decides again.
func (lb *loadAware) decide(st *addrState, now time.Duration) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	t := lb.traffic.Load()
	n := t.OutlierEjection.ConsecutiveFailures
	st.out.setFailing(n > 0 && int(st.out.consecutive.Load()) >= n, st.out.failingShare)
	lb.reconcile(now)
}

// endInterval closes st's failure-percentage interval and judges it
// against its peers' last ones.
func (lb *loadAware) endInterval(st *addrState, now time.Duration) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	out := &st.out
	if int64(now) < out.windowEnd.Load() {
		return // another attempt closed it
	}
	rules := lb.traffic.Load().OutlierEjection
	interval := time.Duration(rules.Interval)
	out.windowEnd.Store(int64(now + interval))
	calls, bad := st.stats.ended.Load(), out.failures.Load()+out.timeouts.Load()
	out.lastCalls, out.lastBad, out.lastAt = calls-out.winCalls, bad-out.winBad, now
	out.winCalls, out.winBad = calls, bad
	var peerCalls, peerBad int64
	for _, peer := range lb.byAddr {
		if peer != st && peer.out.lastAt != 0 && now-peer.out.lastAt <= 2*interval {
			peerCalls += peer.out.lastCalls
			peerBad += peer.out.lastBad
		}
	}
	failing := false
	if out.lastCalls >= int64(rules.MinimumCalls) {
		share := float64(out.lastBad) / float64(out.lastCalls)
		peers := 0.0
		if peerCalls > 0 {
			peers = float64(peerBad) / float64(peerCalls)
		}
		failing = share*100 >= rules.FailurePercentage && share >= 2*peers
	}
	if failing != out.failingShare {
		out.setFailing(out.failingInRow, failing)
		lb.reconcile(now)
	}
}

// reconcile ends the ejections that are over, ejects failing instances
// while the cap allows, and decides panic mode. Called with lb.mu held;
// when anything changed, pickers see it through the epoch.
func (lb *loadAware) reconcile(now time.Duration) {
	t := lb.traffic.Load()
	if t == nil {
		return
	}
	rules := t.OutlierEjection
	changed := false
	ejected, next := 0, time.Duration(math.MaxInt64)
	for addr, st := range lb.byAddr {
		out := &st.out
		u := time.Duration(out.ejectedUntil.Load())
		switch {
		case u == 0:
		case now >= u || !rules.enabled():
			out.ejectedUntil.Store(0)
			out.returnedAt = now
			st.restart() // failures of attempts that ended while it was out do not count
			changed = true
			lb.log().Info("an ejected instance is back", "target", lb.target, "addr", addr)
		default:
			ejected++
			next = min(next, u)
		}
	}
	n := len(lb.byAddr)
	for addr, st := range lb.byAddr {
		out := &st.out
		// One without a ready connection gets no call anyway: ejecting it
		// would only take a place under the cap.
		if !rules.enabled() || !out.failing() || out.ejectedUntil.Load() != 0 || !lb.ready[addr] ||
			!canEject(ejected+1, n, rules.MaxEjectionPercent) {
			continue
		}
		base := time.Duration(rules.BaseEjectionTime)
		if out.returnedAt != 0 {
			// One fewer in the row for every base time served since.
			out.ejections = max(out.ejections-int((now-out.returnedAt)/base), 0)
		}
		out.ejections++
		length := min(base*time.Duration(out.ejections), time.Duration(rules.MaxEjectionTime))
		out.ejectedUntil.Store(int64(now + length))
		st.restart()
		ejected++
		next = min(next, now+length)
		lb.ejections[lb.localIndex(st)]++
		changed = true
		lb.log().Warn("instance ejected: its calls fail far more than its peers'", "target", lb.target, "addr", addr,
			"for", length, "in_a_row", out.ejections)
	}
	lb.nextReturn = next
	inPanic := false
	if rules.enabled() && rules.PanicThreshold > 0 && len(lb.ready) > 0 {
		inPanic = float64(n-lb.unhealthy(now))*100 < rules.PanicThreshold*float64(n)
	}
	if lb.setPanic(inPanic, now) {
		changed = true
	}
	if changed {
		lb.epoch.Add(1)
	}
}

// canEject: k instances out of n ejected would stay within maxPercent,
// rounded down; a percentage given to one decimal counts as the fraction
// it stands for (33.3 % of 3 is 1).
func canEject(k, n int, maxPercent float64) bool {
	return float64(k)*100 <= float64(n)*maxPercent+0.5
}

// unhealthy counts the instances that are ejected, failing, stalled, or
// without a ready connection they had before (one still connecting for
// the first time is not known to be anything yet). Called with lb.mu
// held.
func (lb *loadAware) unhealthy(now time.Duration) int {
	bad := 0
	for addr, st := range lb.byAddr {
		if !lb.ready[addr] && st.everReady || st.out.ejected(now) || st.out.failing() || st.stalledAt(now) {
			bad++
		}
	}
	return bad
}

// setPanic enters or leaves panic mode, and reports whether it changed.
// Entering says so in one log line (at most one a minute, should it
// flap); the metrics show both ways. Called with lb.mu held.
func (lb *loadAware) setPanic(on bool, now time.Duration) bool {
	if on == lb.panic.Load() {
		return false
	}
	lb.panic.Store(on)
	if on {
		lb.panics++
		if lb.panicLogged == 0 || now-lb.panicLogged > time.Minute {
			lb.panicLogged = now
			lb.log().Warn("panic mode: fewer healthy instances than the panic threshold; balancing over all of them, ejected and other zones included",
				"target", lb.target, "instances", len(lb.byAddr), "unhealthy", lb.unhealthy(now),
				"threshold_percent", lb.traffic.Load().OutlierEjection.PanicThreshold)
		}
	}
	return true
}

func (lb *loadAware) log() *slog.Logger {
	if lb.logger != nil {
		return lb.logger
	}
	return slog.Default()
}
