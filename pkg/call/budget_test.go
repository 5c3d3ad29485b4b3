package call

import (
	"testing"

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
