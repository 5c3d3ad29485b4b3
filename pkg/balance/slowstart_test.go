package balance

import (
	"math"
	"testing"
	"time"
)

// A starting instance's share of its weight rises evenly from a tenth to
// all of it over the window.
func TestRamp(t *testing.T) {
	window := 10 * time.Second
	tests := []struct {
		name     string
		from     time.Duration // 0: not starting
		window   time.Duration
		share    float64
		starting bool
	}{
		{"never started slowly", 0, window, 1, false},
		{"just ready", t0, window, 0.1, true},
		{"half way", t0 - 5*time.Second, window, 0.55, true},
		{"window over", t0 - window, window, 1, false},
		{"slow start off", t0, 0, 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &addrState{}
			st.rampFrom.Store(int64(tt.from))
			share, starting := ramp(st, t0, tt.window)
			if math.Abs(share-tt.share) > 1e-9 || starting != tt.starting {
				t.Errorf("ramp = %v, %v; want %v, %v", share, starting, tt.share, tt.starting)
			}
		})
	}
}

// The instances a client finds at its start, when none serves yet, are
// not slowed, nor one ready soon after the first (a fleet starting
// together); one listed while others serve, later, is; one that reconnects
// is not again.
func TestSlowStartBeginsForNewcomersOnly(t *testing.T) {
	_, lb := testFleet(t, pickers[0].parse, `{}`, 0)
	states := map[string]*addrState{}
	for _, addr := range []string{"first", "second", "late", "early", "together"} {
		states[addr] = &addrState{lb: lb}
	}
	list := map[string]string{"first": "", "second": ""}
	arrive := func(addr string) {
		list[addr] = ""
		lb.mu.Lock()
		lb.noteArrivals(list)
		lb.mu.Unlock()
	}
	arrive("first")
	arrive("early") // listed before any is ready
	lb.becameReady("first", states["first"], t0)
	lb.ready = map[string]bool{"first": true}
	lb.becameReady("second", states["second"], t0+time.Second)
	lb.becameReady("early", states["early"], t0+time.Second)
	arrive("together") // with a fleet starting together
	lb.becameReady("together", &addrState{lb: lb}, t0+slowStartAfter/2)
	arrive("late")
	lb.becameReady("late", states["late"], t0+time.Minute)
	for _, addr := range []string{"first", "second", "early", "together"} {
		if states[addr].rampFrom.Load() != 0 {
			t.Errorf("%s: in slow start, though listed before any instance was ready", addr)
		}
	}
	if got := time.Duration(states["late"].rampFrom.Load()); got != t0+time.Minute {
		t.Errorf("late: slow start from %v, want from its first ready connection (%v)", got, t0+time.Minute)
	}
	lb.becameReady("first", states["first"], t0+2*time.Minute) // a reconnection
	if states["first"].rampFrom.Load() != 0 {
		t.Error("a reconnection starts slowly again")
	}
}

// In a view with a starting instance, its weight is a tenth of its
// peers' at first; rollcall_p2c_ewma lets it be slower than its peers by
// up to SlowFactor over that share before it loses a comparison, so that
// a cold instance can warm up.
func TestStartingInstanceWeightAndComparison(t *testing.T) {
	eps, lb := testFleet(t, pickers[0].parse, `{}`, 4)
	for i := range eps {
		eps[i].weight = 1
		eps[i].stats.observe(time.Millisecond)
	}
	eps[3].state.rampFrom.Store(int64(t0))
	v := buildView(eps, routing{traffic: lb.traffic.Load(), nextReturn: forever}, t0)
	if v.window == 0 || v.until > t0+time.Second {
		t.Fatalf("view window %v until %v: want the slow-start window, rebuilt within a second", v.window, v.until-t0)
	}
	if w := v.all[0].weight; w != rampScale {
		t.Errorf("a full weight of 1 is %d in the view, want %d", w, rampScale)
	}
	if w := v.all[3].weight; w != rampScale/10 {
		t.Errorf("the starting instance's weight is %d, want a tenth of %d", w, rampScale)
	}
	p := newP2CPicker(eps, lb.cfg, lb).(*p2cPicker)
	cold := eps[3]
	for _, tt := range []struct {
		latency time.Duration
		worse   bool
	}{
		{10 * time.Millisecond, false}, // 10x: within 2 / 0.1 = 20x
		{30 * time.Millisecond, true},
	} {
		cold.stats.ewmaNs.Store(int64(tt.latency))
		cold.stats.lastAnswer.Store(int64(t0)) // answering: its estimate is fresh
		if got := p.worse(cold, eps[0], t0, v.window); got != tt.worse {
			t.Errorf("starting instance at %v against 1ms: worse %v, want %v", tt.latency, got, tt.worse)
		}
	}
	cold.stats.lastAnswer.Store(int64(t0 + time.Hour))
	if !p.worse(cold, eps[0], t0+time.Hour, v.window) {
		t.Error("after its window, an instance 30x slower does not lose")
	}
}
