package balance

import (
	"context"
	"math"
	"testing"
	"time"

	"google.golang.org/grpc/balancer"

	"github.com/rollcall/rollcall/pkg/liveness"
)

// zoned returns endpoints in the zones given, of weight 1, each answering
// in 1 ms, the last answer at t0, held by a balancer whose client is in
// zone a.
func zoned(t *testing.T, zones ...string) []endpoint {
	t.Helper()
	eps, _ := testFleet(t, pickers[0].parse, `{"zone":"a"}`, len(zones), zones...)
	for i := range eps {
		eps[i].weight = 1
		eps[i].stats.observe(time.Millisecond)
		eps[i].stats.lastAnswer.Store(int64(t0))
	}
	return eps
}

// Calls stay in the client's zone while it holds its share of the healthy
// capacity (one over the number of zones); below it, only the shortfall
// leaves, to the zones with capacity to spare.
func TestRouteZones(t *testing.T) {
	stall := func(ep endpoint) {
		var hb heartbeat = silent{}
		ep.state.heartbeat.Store(&hb)
	}
	tests := []struct {
		name   string
		zones  []string
		change func(eps []endpoint)
		nZones int
		stay   float64
		spill  map[string]float64 // share of the spill per zone
	}{
		{name: "3 a, 3 b", zones: []string{"a", "a", "a", "b", "b", "b"}, nZones: 2, stay: 1},
		{name: "1 a, 5 b", zones: []string{"a", "b", "b", "b", "b", "b"}, nZones: 2, stay: 1.0 / 3, spill: map[string]float64{"b": 1}},
		{name: "none in a", zones: []string{"b", "b", "b"}, nZones: 2, stay: 0, spill: map[string]float64{"b": 1}},
		{name: "3 a of which 2 stalled, 3 b", zones: []string{"a", "a", "a", "b", "b", "b"}, nZones: 2,
			change: func(eps []endpoint) { stall(eps[0]); stall(eps[1]) }, stay: 0.5, spill: map[string]float64{"b": 1}},
		{name: "3 a all failing, 3 b", zones: []string{"a", "a", "a", "b", "b", "b"}, nZones: 2,
			change: func(eps []endpoint) {
				for _, ep := range eps[:3] {
					ep.state.out.isFailing.Store(true)
				}
			}, stay: 0, spill: map[string]float64{"b": 1}},
		{name: "1 a and 2 without a zone, 3 b", zones: []string{"a", "", "", "b", "b", "b"}, nZones: 2, stay: 1},
		{name: "a weighs 3, three b weigh 1", zones: []string{"a", "b", "b", "b"}, nZones: 2,
			change: func(eps []endpoint) { eps[0].weight = 3 }, stay: 1},
		{name: "3 zones: 1 a, 3 b, 2 c", zones: []string{"a", "b", "b", "b", "c", "c"}, nZones: 3,
			stay: 0.5, spill: map[string]float64{"b": 1, "c": 0}},
		{name: "3 zones: 1 a, 4 b, 4 c", zones: []string{"a", "b", "b", "b", "b", "c", "c", "c", "c"}, nZones: 3,
			stay: 1.0 / 9 * 3, spill: map[string]float64{"b": 0.5, "c": 0.5}},
		{name: "one a instance 10x slower", zones: []string{"a", "a", "a", "b", "b", "b"}, nZones: 2, stay: 2.1 / 5.1 * 2,
			spill: map[string]float64{"b": 1}, change: func(eps []endpoint) { eps[0].stats.ewmaNs.Store(int64(10 * time.Millisecond)) }},
		{name: "one a instance 10x slower, no answer for a minute: not slow", zones: []string{"a", "a", "a", "b", "b", "b"}, nZones: 2, stay: 1,
			change: func(eps []endpoint) {
				eps[0].stats.ewmaNs.Store(int64(10 * time.Millisecond))
				eps[0].stats.lastAnswer.Store(int64(t0 - time.Minute))
			}},
		{name: "one a instance 4x slower, by 3 ms: not slow", zones: []string{"a", "a", "a", "b", "b", "b"}, nZones: 2,
			change: func(eps []endpoint) { eps[0].stats.ewmaNs.Store(int64(4 * time.Millisecond)) }, stay: 1},
		{name: "one a instance 1.5x slower: not slow", zones: []string{"a", "a", "a", "b", "b", "b"}, nZones: 2,
			change: func(eps []endpoint) { eps[0].stats.ewmaNs.Store(int64(1500 * time.Microsecond)) }, stay: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eps := zoned(t, tt.zones...)
			if tt.change != nil {
				tt.change(eps)
			}
			z := routeZones(eps, "a", tt.nZones, t0, 2)
			if z == nil {
				t.Fatal("no route")
			}
			if math.Abs(z.stay-tt.stay) > 1e-9 {
				t.Errorf("stay %.4f, want %.4f", z.stay, tt.stay)
			}
			prev := 0.0
			for _, p := range z.remote {
				if want := tt.spill[p.zone]; math.Abs(p.upTo-prev-want) > 1e-9 {
					t.Errorf("zone %s takes %.4f of the spill, want %.4f", p.zone, p.upTo-prev, want)
				}
				prev = p.upTo
			}
		})
	}
}

// Draws follow the split: with a third staying, about a third of the
// picks go to the client's zone.
func TestZoneDrawsFollowTheSplit(t *testing.T) {
	eps := zoned(t, "a", "b", "b", "b", "b", "b")
	z := routeZones(eps, "a", 2, t0, 2)
	local := 0
	const n = 3000
	for range n {
		if pool := z.draw(); pool[0].state == eps[0].state {
			local++
		}
	}
	// A binomial draw: within about four standard deviations (26 each).
	if local < 900 || local > 1100 {
		t.Errorf("%d of %d draws stayed in zone a, want about 1000", local, n)
	}
}

// A retry or hedge stays in the client's zone while it has instances the
// call has not tried; the attempt after two tried ones goes to another
// zone, in case the whole zone went down. Both policies.
func TestLastAttemptLeavesTheZone(t *testing.T) {
	for _, policy := range pickers {
		t.Run(policy.name, func(t *testing.T) {
			eps, lb := testFleet(t, policy.parse, `{"zone":"a"}`, 6, "a", "b")
			for i := range eps {
				eps[i].weight = 1
				eps[i].stats.observe(time.Millisecond)
				eps[i].stats.lastAnswer.Store(int64(liveness.Now()))
			}
			p := policy.new(eps, lb.cfg, lb)
			tried := func(eps ...endpoint) *Attempt {
				a := &Attempt{}
				for _, ep := range eps {
					b := &Attempt{}
					b.picked.Store(ep.state)
					a.Avoid(b)
				}
				return a
			}
			// eps 0, 2 and 4 are in zone a.
			for _, tt := range []struct {
				name   string
				tried  []endpoint
				inZone string
			}{
				{"first attempt", nil, "a"},
				{"after one", []endpoint{eps[0]}, "a"},
				{"after two", []endpoint{eps[0], eps[2]}, "b"},
			} {
				for range 50 {
					a := tried(tt.tried...)
					_, err := p.Pick(balancer.PickInfo{Ctx: WithAttempt(context.Background(), a)})
					if err != nil {
						t.Fatal(err)
					}
					a.End(errCanceled)
					if z := a.picked.Load().zoneName(); z != tt.inZone {
						t.Fatalf("%s: picked an instance of zone %s, want %s", tt.name, z, tt.inZone)
					}
				}
			}
		})
	}
}

// The usual view is plain: its picks use the picker's instances as they
// are. Ejection, slow start and zones make one that is not; panic mode
// ignores ejection and zones.
func TestViewIsPlainUnlessNeeded(t *testing.T) {
	tests := []struct {
		name   string
		cfg    string
		zones  []string
		change func(eps []endpoint, r *routing)
		plain  bool
		all    int // instances picks choose from, when not plain
	}{
		{name: "defaults, no zones", cfg: `{}`, plain: true},
		{name: "zones, the client's not set", cfg: `{}`, zones: []string{"a", "b"}, plain: true},
		{name: "one zone, the client's", cfg: `{"zone":"a"}`, zones: []string{"a"}, plain: true},
		{name: "the client's zone and none", cfg: `{"zone":"a"}`, zones: []string{"a", ""}, plain: true},
		{name: "two zones", cfg: `{"zone":"a"}`, zones: []string{"a", "b"}, all: 4},
		{name: "one ejected", cfg: `{}`, change: func(eps []endpoint, _ *routing) {
			eps[1].state.out.ejectedUntil.Store(int64(t0 + time.Minute))
		}, all: 3},
		{name: "one ejected, in panic mode", cfg: `{"zone":"a"}`, zones: []string{"a", "b"}, change: func(eps []endpoint, r *routing) {
			eps[1].state.out.ejectedUntil.Store(int64(t0 + time.Minute))
			r.panic = true
		}, plain: true},
		{name: "one starting", cfg: `{}`, change: func(eps []endpoint, _ *routing) {
			eps[2].state.rampFrom.Store(int64(t0 - time.Second))
		}, all: 4},
		{name: "one starting, slow start off", cfg: `{"slowStartWindow":"0s"}`, change: func(eps []endpoint, _ *routing) {
			eps[2].state.rampFrom.Store(int64(t0 - time.Second))
		}, plain: true},
		{name: "one ejected long ago", cfg: `{}`, change: func(eps []endpoint, _ *routing) {
			eps[1].state.out.ejectedUntil.Store(int64(t0 - time.Minute))
		}, plain: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eps, lb := testFleet(t, pickers[0].parse, tt.cfg, 4, tt.zones...)
			r := routing{traffic: lb.traffic.Load(), zones: lb.zones, nextReturn: forever}
			if tt.change != nil {
				tt.change(eps, &r)
			}
			v := buildView(eps, r, t0)
			if v.plain != tt.plain {
				t.Fatalf("plain %v, want %v", v.plain, tt.plain)
			}
			if !v.plain && len(v.all) != tt.all {
				t.Errorf("%d instances to choose from, want %d", len(v.all), tt.all)
			}
		})
	}
}
