package call

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/cpu"

	"github.com/rollcall/rollcall/pkg/liveness"
)

// Default retry budget (Linkerd's model): extra attempts, of every kind,
// may be at most this share of the calls of the last budgetWindow, plus
// budgetPerSecond for every second of it, so that a client with little
// traffic can still retry while an outage of every instance cannot
// multiply the load; 9 %, so that with the floor they stay within 10 %.
// The same holds within the last second (sliding, not the clock's), so
// that calls made before an outage do not pay for a burst of retries in
// it, and an outage that starts as a second turns still gets its retries.
const (
	DefaultBudgetRatio     = 0.09
	DefaultBudgetPerSecond = 1.0
	budgetWindow           = 10 // seconds
)

// budget counts one connection's calls and extra attempts per second over
// the last budgetWindow seconds.
type budget struct {
	ratio, perSecond float64
	start            time.Duration // liveness.Now at creation
	mu               sync.Mutex    // rotates slots, serializes withdrawals
	slots            [budgetWindow]budgetSlot
}

// budgetSlot counts one second. Every call adds to calls: the count is
// spread over cache lines of their own, so that callers on different
// cores seldom write the same line, nor the line every call reads sec from
// (two cores depositing at once: 85 ns a deposit before, 60 ns after).
type budgetSlot struct {
	sec   atomic.Int64 // the second this slot counts, since start
	extra atomic.Int64
	_     cpu.CacheLinePad
	calls [callStripes]stripe
}

const callStripes = 4

type stripe struct {
	atomic.Int64
	_ cpu.CacheLinePad
}

func (s *budgetSlot) callCount() int64 {
	var n int64
	for i := range s.calls {
		n += s.calls[i].Load()
	}
	return n
}

func newBudget(ratio, perSecond float64) *budget {
	b := &budget{ratio: ratio, perSecond: perSecond, start: liveness.Now()}
	for i := range b.slots {
		b.slots[i].sec.Store(-1)
	}
	return b
}

// second is the budget's second at now (liveness.Now).
func (b *budget) second(now time.Duration) int64 { return int64((now - b.start) / time.Second) }

func (b *budget) rotateLocked(s *budgetSlot, sec int64) {
	if s.sec.Load() != sec {
		for i := range s.calls {
			s.calls[i].Store(0)
		}
		s.extra.Store(0)
		s.sec.Store(sec)
	}
}

// deposit counts a call made at now (liveness.Now).
func (b *budget) deposit(now time.Duration) {
	sec := b.second(now)
	s := &b.slots[sec%budgetWindow]
	if s.sec.Load() != sec {
		b.mu.Lock()
		b.rotateLocked(s, sec)
		b.mu.Unlock()
	}
	s.calls[rand.Uint32N(callStripes)].Add(1)
}

// Available is how many extra attempts the budget allows now.
func (b *budget) Available() float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	a, _ := b.availableLocked(liveness.Now())
	return a
}

// withdraw takes one extra attempt from the budget, if it allows one.
func (b *budget) withdraw() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := liveness.Now()
	a, s := b.availableLocked(now)
	// Within the last second the ratio holds too (with the window's
	// floor, so that it bites only on busy connections).
	calls, extra := b.lastSecondLocked(now, s)
	if a < 1 || extra+1 > b.ratio*calls+b.perSecond*budgetWindow {
		return false
	}
	s.extra.Add(1)
	return true
}

// lastSecondLocked returns the calls and extra attempts of the second
// before now: the current slot's, plus the previous slot's in proportion
// to the part of it still within that second. The current slot alone
// would hold next to no calls just after it began, and refuse the
// retries of an outage that starts then.
func (b *budget) lastSecondLocked(now time.Duration, cur *budgetSlot) (calls, extra float64) {
	calls, extra = float64(cur.callCount()), float64(cur.extra.Load())
	sec := b.second(now)
	if prev := &b.slots[(sec+budgetWindow-1)%budgetWindow]; sec > 0 && prev.sec.Load() == sec-1 {
		share := 1 - float64((now-b.start)%time.Second)/float64(time.Second)
		calls += share * float64(prev.callCount())
		extra += share * float64(prev.extra.Load())
	}
	return calls, extra
}

// availableLocked returns what the budget allows at now and the current
// slot.
func (b *budget) availableLocked(now time.Duration) (float64, *budgetSlot) {
	sec := b.second(now)
	cur := &b.slots[sec%budgetWindow]
	b.rotateLocked(cur, sec)
	var calls, extra int64
	for i := range b.slots {
		s := &b.slots[i]
		if age := sec - s.sec.Load(); age >= 0 && age < budgetWindow {
			calls += s.callCount()
			extra += s.extra.Load()
		}
	}
	return b.ratio*float64(calls) + b.perSecond*budgetWindow - float64(extra), cur
}
