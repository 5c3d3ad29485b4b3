package balance

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rollcall/rollcall/pkg/liveness"
)

// errCanceled ends a test's attempt as one its caller gave up: it counts
// for nothing.
var errCanceled = status.Error(codes.Canceled, "the test ends the attempt")

// An instance with calls in flight and no answer for a while (a
// deadlocked handler) loses to one that answers, whatever its latency
// estimate; a slow instance that answers loses by its latency; one that
// lost every comparison for long enough is tried again.
func TestStuckInstanceLosesTheComparison(t *testing.T) {
	cfg, _ := parseP2CConfig(nil)
	p := &p2cPicker{cfg: cfg.(*P2CConfig)}
	now := time.Hour
	ep := func(latency time.Duration, inflight int64, silence time.Duration) endpoint {
		st := &addrState{}
		st.stats.observe(latency)
		st.stats.picked.Store(inflight)
		st.stats.lastAnswer.Store(int64(now - silence))
		return endpoint{weight: 1, state: st, stats: &st.stats}
	}
	tests := []struct {
		name string
		a, b endpoint
		want bool
	}{
		{"equal", ep(time.Millisecond, 10, 0), ep(time.Millisecond, 10, 0), false},
		{"silent, nothing in flight", ep(time.Millisecond, 0, time.Minute), ep(time.Millisecond, 10, 0), false},
		{"stuck, though faster", ep(time.Millisecond, 40, time.Second), ep(3*time.Millisecond, 10, 0), true},
		{"the other stuck, though slower", ep(3*time.Millisecond, 10, 0), ep(time.Millisecond, 40, time.Second), false},
		{"silent less than minStuck", ep(time.Millisecond, 5, 10*time.Millisecond), ep(time.Millisecond, 5, 0), false},
		{"silent under 4x its latency, but slower", ep(100*time.Millisecond, 5, 300*time.Millisecond), ep(time.Millisecond, 5, 0), true},
		{"slower by 10x, answering", ep(20*time.Millisecond, 2, 0), ep(2*time.Millisecond, 10, 0), true},
		{"slower by 1.5x", ep(3*time.Millisecond, 10, 0), ep(2*time.Millisecond, 10, 0), false},
		{"slower by 10x, no answer for a second", ep(20*time.Millisecond, 0, time.Second), ep(2*time.Millisecond, 10, 0), true},
		{"slower by 10x, no answer for 30 s: tried again", ep(20*time.Millisecond, 0, 30*time.Second), ep(2*time.Millisecond, 10, 0), false},
		{"slower by 10x, no answer for 30 s, one in flight", ep(20*time.Millisecond, 1, 30*time.Second), ep(2*time.Millisecond, 10, 0), true},
		{"slower by 2.5x, no answer for 5 s: tried again", ep(5*time.Millisecond, 0, 5*time.Second), ep(2*time.Millisecond, 10, 0), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := p.worse(tt.a, tt.b, now, 0); got != tt.want {
				t.Errorf("worse = %v, want %v", got, tt.want)
			}
		})
	}
}

// When every instance's heartbeat has stopped, both policies spread calls
// over all of them rather than send everything to one.
func TestEveryInstanceStalledSpreadsCalls(t *testing.T) {
	for _, policy := range pickers {
		t.Run(policy.name, func(t *testing.T) {
			eps := make([]endpoint, 3)
			for i := range eps {
				st := &addrState{}
				var hb heartbeat = silent{}
				st.heartbeat.Store(&hb)
				eps[i] = endpoint{picker: readyPicker{}, weight: 1, state: st, stats: &st.stats}
			}
			if !eps[0].isStalled(liveness.Now() + time.Second) {
				t.Fatal("the test's instances do not look stalled")
			}
			p := policy.new(eps, nil, nil)
			picked := map[*addrState]int{}
			for range 300 {
				a := &Attempt{}
				_, err := p.Pick(balancer.PickInfo{Ctx: WithAttempt(context.Background(), a)})
				if err != nil {
					t.Fatal(err)
				}
				a.End(errCanceled)
				picked[a.picked.Load()]++
			}
			for i, ep := range eps {
				if n := picked[ep.state]; n < 50 {
					t.Errorf("instance %d got %d of 300 picks; want them spread over all three", i, n)
				}
			}
		})
	}
}

// silent is the heartbeat watch of an instance whose heartbeats stopped.
type silent struct{}

func (silent) Stalled(time.Duration) bool { return true }

// A hedge or retry goes to an instance the call has not tried, even one
// whose heartbeat is late, rather than back to the instance where the call
// already waits or failed. Both policies.
func TestExtraAttemptPrefersAnUntriedStalledInstance(t *testing.T) {
	for _, policy := range pickers {
		t.Run(policy.name, func(t *testing.T) {
			tried, stalled := &addrState{}, &addrState{}
			var hb heartbeat = silent{}
			stalled.heartbeat.Store(&hb)
			eps := []endpoint{
				{picker: readyPicker{}, weight: 1, state: tried, stats: &tried.stats},
				{picker: readyPicker{}, weight: 1, state: stalled, stats: &stalled.stats},
			}
			p := policy.new(eps, nil, nil)
			first := &Attempt{}
			first.picked.Store(tried)
			for range 20 {
				a := &Attempt{}
				a.Avoid(first)
				_, err := p.Pick(balancer.PickInfo{Ctx: WithAttempt(context.Background(), a)})
				if err != nil {
					t.Fatal(err)
				}
				a.End(errCanceled)
				if a.picked.Load() != stalled {
					t.Fatal("the extra attempt went back to the instance the call tried")
				}
			}
		})
	}
}

// gRPC picks again for the same attempt when the chosen connection was not
// ready: the earlier pick ends as one that reached no instance, so that
// the calls in flight stay counted right and only the answer is a sample.
func TestPickingAgainEndsTheEarlierPick(t *testing.T) {
	for _, policy := range pickers {
		t.Run(policy.name, func(t *testing.T) {
			st := &addrState{}
			p := policy.new([]endpoint{{picker: readyPicker{}, weight: 1, state: st, stats: &st.stats}}, nil, nil)
			a := &Attempt{}
			for range 2 {
				if _, err := p.Pick(balancer.PickInfo{Ctx: WithAttempt(context.Background(), a)}); err != nil {
					t.Fatal(err)
				}
			}
			if n := st.stats.inflight(); n != 1 {
				t.Fatalf("after two picks of one attempt: %d in flight, want 1", n)
			}
			if st.stats.sampled.Load() {
				t.Fatal("the pick that reached no instance gave a latency sample")
			}
			a.End(nil)
			if n := st.stats.inflight(); n != 0 {
				t.Errorf("after the attempt's end: %d in flight, want 0", n)
			}
			if !st.stats.sampled.Load() {
				t.Error("the answer gave no latency sample")
			}
		})
	}
}

// While one instance is ready, a call made in one attempt is counted, not
// timed, and gives gRPC no Done callback; an attempt is followed as with
// any number of instances. Once another instance is ready, the one that
// served alone starts from no estimate, and its silence is no stall.
func TestSoloInstanceIsCountedThenRetimed(t *testing.T) {
	st := &addrState{}
	st.stats.observe(5 * time.Millisecond)
	st.stats.lastAnswer.Store(int64(liveness.Now() - time.Minute))
	ep := endpoint{picker: readyPicker{}, weight: 1, state: st, stats: &st.stats}
	p := &soloPicker{ep: ep, policy: newP2CPicker([]endpoint{ep}, nil, nil)}

	res, err := p.Pick(balancer.PickInfo{Ctx: context.Background()})
	if err != nil {
		t.Fatal(err)
	}
	if res.Done != nil {
		t.Error("a call in one attempt got a Done callback")
	}
	if picked, n := st.stats.picked.Load(), st.stats.inflight(); picked != 1 || n != 0 {
		t.Errorf("after one call: %d picked, %d in flight; want 1 and 0", picked, n)
	}
	if !st.stats.untimed.Load() || st.stats.ewmaNs.Load() != int64(5*time.Millisecond) {
		t.Errorf("untimed %v, estimate %v; want true and the 5ms it had", st.stats.untimed.Load(), time.Duration(st.stats.ewmaNs.Load()))
	}

	a := &Attempt{}
	if _, err := p.Pick(balancer.PickInfo{Ctx: WithAttempt(context.Background(), a)}); err != nil {
		t.Fatal(err)
	}
	if a.picked.Load() != st || st.stats.inflight() != 1 {
		t.Fatalf("an attempt was not followed: picked %v, %d in flight", a.picked.Load() == st, st.stats.inflight())
	}
	a.End(nil)

	other := &addrState{}
	now := liveness.Now()
	retime([]endpoint{ep, {picker: readyPicker{}, weight: 1, state: other, stats: &other.stats}}, now)
	if st.stats.untimed.Load() || st.stats.sampled.Load() || st.stats.ewmaNs.Load() != 0 || st.stats.lastAnswer.Load() != int64(now) {
		t.Errorf("after another instance came: untimed %v, sampled %v, estimate %v, last answer %v ago; want a fresh start",
			st.stats.untimed.Load(), st.stats.sampled.Load(), time.Duration(st.stats.ewmaNs.Load()), now-time.Duration(st.stats.lastAnswer.Load()))
	}
}
