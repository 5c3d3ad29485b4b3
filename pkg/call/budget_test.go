package call

import (
	"testing"
	"time"

	"github.com/rollcall/rollcall/pkg/liveness"
)

// The budget allows ratio x calls plus the floor (perSecond x 10 s), and
// no more.
func TestBudgetBoundsExtraAttempts(t *testing.T) {
	tests := []struct {
		calls     int
		ratio     float64
		perSecond float64
		want      int
	}{
		{0, 0.1, 1, 10},
		{1000, 0.1, 1, 110},
		{1000, 0.1, 0, 100},
		{1000, 0, 0, 0},
	}
	for _, tt := range tests {
		b := newBudget(tt.ratio, tt.perSecond)
		for range tt.calls {
			b.deposit(liveness.Now())
		}
		got := 0
		for b.withdraw() {
			got++
			if got > tt.calls+100 {
				break
			}
		}
		if got != tt.want {
			t.Errorf("%d calls, ratio %v, %v/s: %d extra attempts allowed, want %d", tt.calls, tt.ratio, tt.perSecond, got, tt.want)
		}
	}
}

// Just after the budget's second turned, the calls of the second before
// still pay for extra attempts: an outage then gets its retries.
func TestBudgetAllowsRetriesJustAfterTheSecondTurns(t *testing.T) {
	b := newBudget(0.1, 1)
	now := liveness.Now()
	b.start = now - time.Second - time.Millisecond // 1 ms into second 1
	for range 1000 {
		b.deposit(now - 2*time.Millisecond) // second 0
	}
	got := 0
	for b.withdraw() && got <= 200 {
		got++
	}
	// The last second held about 999 calls: 0.1 x 999 + 10.
	if got < 100 || got > 110 {
		t.Errorf("%d extra attempts allowed just after the second turned, want 100 to 110", got)
	}
}
