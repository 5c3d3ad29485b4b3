package liveness

import (
	"testing"
	"time"
)

// A client that was paused (GC, CPU starvation) finds every heartbeat
// old when it resumes, and its stall timer late: neither its picks nor its
// timer call the instance stalled on silence the pause explains. A timer
// on time does.
func TestClientPauseDoesNotMarkInstancesStalled(t *testing.T) {
	tests := []struct {
		name        string
		timerLate   time.Duration // how late the stall timer fires
		wantStalled bool
	}{
		{"timer on time: the instance is silent", 0, true},
		{"timer late: the client was paused", time.Second, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &Watch{}
			w.timer = time.AfterFunc(time.Hour, func() {})
			defer w.timer.Stop()
			w.beating.Store(true)
			now := Now()
			w.last.Store(int64(now - stallAfter - time.Second))
			if w.Stalled(now) {
				t.Fatal("stalled at a pick before the timer said so: a paused client's first pick would flap")
			}
			w.armedAt.Store(int64(now - tt.timerLate))
			w.overdue()
			if got := w.Stalled(Now()); got != tt.wantStalled {
				t.Errorf("stalled after the timer = %v, want %v", got, tt.wantStalled)
			}
		})
	}
}
