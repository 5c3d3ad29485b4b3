package service

import (
	"testing"
	"time"
)

// The first WarmupCalls calls take ten times the latency; the rest, the
// latency.
func TestWarmupCallsAreSlower(t *testing.T) {
	for _, tt := range []struct {
		warmup int
		want   []time.Duration
	}{
		{0, []time.Duration{2, 2, 2}},
		{2, []time.Duration{20, 20, 2, 2}},
	} {
		g := NewGreeter(nil, Faults{Latency: 2, WarmupCalls: tt.warmup}, nil)
		for i, want := range tt.want {
			if got := g.nextLatency(); got != want {
				t.Errorf("warmup %d: call %d takes %v, want %v", tt.warmup, i+1, got, want)
			}
		}
	}
}
