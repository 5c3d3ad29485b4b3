package call

import (
	"math/bits"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// latencies is a method's recent attempt latencies, as a log-linear
// histogram (eight buckets per doubling, so a quantile is within 12.5 %)
// over the last one to two latencyWindows. Recording is two atomic adds;
// quantiles are recomputed at most every quantileEvery.
type latencies struct {
	windows  [2]histogram
	active   atomic.Int32
	rotateAt atomic.Int64 // liveness.Now
	mu       sync.Mutex   // rotation and quantile computation

	nextCompute atomic.Int64 // liveness.Now
	hedgeAt     atomic.Int64 // the hedge quantile, ns; 0 = too few samples
	median      atomic.Int64 // ns
}

const (
	latencyWindow = 5 * time.Second
	quantileEvery = 100 * time.Millisecond
	// minSamples: fewer recent samples than this and the method is not
	// hedged: its tail is not known yet.
	minSamples   = 50
	latencyBins  = 320
	subBucketLog = 3 // 8 sub-buckets per doubling
	sampleAbove  = 2000
	sampleEvery  = 8
)

type histogram struct {
	total  atomic.Int64
	counts [latencyBins]atomic.Int64
}

// bucketOf is d's bucket: microseconds below 8 are exact, then eight
// buckets per doubling.
func bucketOf(d time.Duration) int {
	us := uint64(max(d, 0) / time.Microsecond)
	if us < 1<<subBucketLog {
		return int(us)
	}
	e := bits.Len64(us) - 1
	sub := (us >> (e - subBucketLog)) & (1<<subBucketLog - 1)
	return min((e-subBucketLog+1)<<subBucketLog+int(sub), latencyBins-1)
}

// bucketTop is the upper bound of bucket i.
func bucketTop(i int) time.Duration {
	i++
	if i < 1<<subBucketLog {
		return time.Duration(i) * time.Microsecond
	}
	e := i>>subBucketLog + subBucketLog - 1
	sub := i & (1<<subBucketLog - 1)
	return time.Duration((1<<subBucketLog+sub)<<(e-subBucketLog)) * time.Microsecond
}

// record adds one attempt's latency. Once the window holds enough samples
// for a steady quantile, only one call in sampleEvery is recorded: the
// counters are shared by every caller's goroutine.
func (l *latencies) record(d, now time.Duration) {
	if int64(now) >= l.rotateAt.Load() {
		l.rotate(now)
	}
	h := &l.windows[l.active.Load()]
	if h.total.Load() >= sampleAbove && rand.Uint32N(sampleEvery) != 0 {
		return
	}
	h.counts[bucketOf(d)].Add(1)
	h.total.Add(1)
}

// rotate starts a new window, clearing the older one.
func (l *latencies) rotate(now time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if int64(now) < l.rotateAt.Load() {
		return
	}
	next := 1 - l.active.Load()
	h := &l.windows[next]
	for i := range h.counts {
		h.counts[i].Store(0)
	}
	h.total.Store(0)
	l.active.Store(next)
	l.rotateAt.Store(int64(now + latencyWindow))
}

// estimates returns the latency at quantile q and the median of the
// recent attempts, recomputed at most every quantileEvery; zero when
// there are too few samples.
func (l *latencies) estimates(q float64, now time.Duration) (atQ, median time.Duration) {
	if int64(now) >= l.nextCompute.Load() && l.mu.TryLock() {
		l.nextCompute.Store(int64(now + quantileEvery))
		a, m := l.compute(q)
		l.hedgeAt.Store(int64(a))
		l.median.Store(int64(m))
		l.mu.Unlock()
	}
	return time.Duration(l.hedgeAt.Load()), time.Duration(l.median.Load())
}

func (l *latencies) compute(q float64) (atQ, median time.Duration) {
	total := l.windows[0].total.Load() + l.windows[1].total.Load()
	if total < minSamples {
		return 0, 0
	}
	wantQ, wantM := int64(q*float64(total)), total/2
	var seen int64
	for i := range latencyBins {
		seen += l.windows[0].counts[i].Load() + l.windows[1].counts[i].Load()
		if median == 0 && seen > wantM {
			median = bucketTop(i)
		}
		if seen > wantQ {
			return bucketTop(i), median
		}
	}
	return bucketTop(latencyBins - 1), max(median, bucketTop(latencyBins-1))
}
