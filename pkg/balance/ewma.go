package balance

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/cpu"

	"github.com/rollcall/rollcall/pkg/liveness"
)

// addrState is what the balancer keeps of one address across picker
// updates: its figures, its heartbeat watch, and the attempts in flight on
// it that may be cut when it stalls.
//
// Every attempt writes stats (and, when it may be cut, mu and inflight),
// from whichever core its caller runs on; every pick reads the rest. The
// written fields have cache lines of their own, so that the reads do not
// miss each time another core has written (a pick and its Done from two
// cores at once: 303 ns before, 268 ns after, with three instances).
type addrState struct {
	_        cpu.CacheLinePad
	stats    stats
	mu       sync.Mutex
	inflight *Attempt // list of cuttable attempts, linked through Attempt.next
	_        cpu.CacheLinePad

	heartbeat atomic.Pointer[heartbeat] // nil before its connection is ready
	lb        *loadAware                // the balancer that keeps it
	out       outlierStats
	// rampFrom is liveness.Now when its slow start began; 0: none.
	rampFrom atomic.Int64

	zone atomic.Pointer[string] // as registered, from the resolver's list

	everReady bool // under lb.mu
}

// zoneName is the zone the instance registered, "" for none.
func (st *addrState) zoneName() string {
	if z := st.zone.Load(); z != nil {
		return *z
	}
	return ""
}

func (st *addrState) setZone(zone string) {
	if st.zoneName() != zone {
		st.zone.Store(&zone)
	}
}

// heartbeat is what picks ask of an instance's heartbeat watch
// (*liveness.Watch).
type heartbeat interface{ Stalled(now time.Duration) bool }

var _ liveness.Listener = (*addrState)(nil)

// stalledAt: the instance's heartbeat has stopped, at now.
func (st *addrState) stalledAt(now time.Duration) bool {
	hb := st.heartbeat.Load()
	return hb != nil && (*hb).Stalled(now)
}

// watch makes w the instance's heartbeat watch, and st its listener.
func (st *addrState) watch(w *liveness.Watch) {
	w.SetListener(st)
	var hb heartbeat = w
	st.heartbeat.Store(&hb)
}

// stats are one instance's figures.
type stats struct {
	// picked and ended count the instance's attempts: those in flight are
	// their difference. Two counters rather than one up and down, so that
	// ended also counts the attempts for outlier ejection and metrics.
	picked, ended atomic.Int64
	ewmaNs        atomic.Int64 // latency estimate, nanoseconds; 0 = none yet
	// sampled: the estimate comes from the instance's own answers, not
	// from its peers' (see seed).
	sampled atomic.Bool
	// lastAnswer is liveness.Now at the instance's last answer (or failure
	// it reported), and when it joined before any.
	lastAnswer atomic.Int64
	// untimed: the instance served calls alone, counted but not timed
	// (soloPicker).
	untimed atomic.Bool
}

// The latency estimate is an asymmetric EWMA that follows an instance's
// fastest answers: it falls quickly (weight down) and rises slowly (weight
// up). Queueing on a saturated client or machine delays every instance's
// answers alike and moves it little, while an instance that is slower at
// its work, or fails, keeps it high.
const (
	weightDown = 0.5
	weightUp   = 0.05
)

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

// Resumed (a liveness.Listener method): st beats again after a stall.
// What its estimate learnt from the attempts the stall held says nothing
// of it now: it starts again from its peers' estimate, as a new instance
// does.
func (st *addrState) Resumed() {
	if st.lb == nil {
		return
	}
	st.lb.epoch.Add(1) // its capacity counts again for its zone, and against panic mode
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

// staleDecay is the time constant over which an estimate that no answer
// refreshes loses its weight (Finagle's peak EWMA decays over the same
// 10 s, toward zero).
const staleDecay = 10 * time.Second

// estimateAgainst is the instance's latency estimate as it counts against
// ref: its excess over ref shrunk as the estimate goes stale.
func (st *stats) estimateAgainst(ref, now time.Duration) time.Duration {
	own := time.Duration(st.ewmaNs.Load())
	if own <= ref {
		return own
	}
	return ref + time.Duration(float64(own-ref)*st.freshness(now))
}

// freshness is how much an instance's estimate still counts against a
// fresher one's, in (0, 1]: all of it while an attempt is in flight on
// it, less and less as time passes without an answer. An instance that a
// few slow answers (a cold start, a pause of its machine) put behind its
// peers gets no calls, so no answer would ever correct its estimate: this
// way it is tried again after a while, the sooner the smaller its
// excess: about 4 s for 2.5x its peers, 20 s for 10x, a minute for a
// failure penalty of 1 s against 1 ms.
func (st *stats) freshness(now time.Duration) float64 {
	if st.inflight() > 0 {
		return 1
	}
	idle := now - time.Duration(st.lastAnswer.Load())
	if idle <= 0 {
		return 1
	}
	return math.Exp(-float64(idle) / float64(staleDecay))
}

// inflight is how many attempts are in flight on the instance.
func (st *stats) inflight() int64 {
	ended := st.ended.Load() // first: picked never falls behind it
	return st.picked.Load() - ended
}

// observe folds one latency sample into the estimate. A seeded estimate
// (its peers') is folded into like the instance's own: one slow first
// answer (a cold cache, a loaded machine) would otherwise put a new
// instance far behind its peers, and p2c would give it no call that could
// correct that for seconds; a truly slower one is known after a few.
func (st *stats) observe(sample time.Duration) {
	if !st.sampled.Load() {
		st.sampled.Store(true)
		if st.ewmaNs.CompareAndSwap(0, int64(sample)) {
			return // nothing to fold into
		}
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
