package balance

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// t0 is a time on liveness.Now's clock for tests that give every time
// themselves: far from 0, which means "none".
const t0 = time.Hour

func fail(c codes.Code) balancer.DoneInfo {
	return balancer.DoneInfo{Err: status.Error(c, "x"), BytesReceived: true}
}

var okAnswer = balancer.DoneInfo{BytesReceived: true}

// Only codes that say the server failed count toward ejection; an
// application's codes are answers.
func TestOutcomeOf(t *testing.T) {
	tests := []struct {
		name string
		di   balancer.DoneInfo
		cut  cut
		want outcome
	}{
		{"OK", okAnswer, notCut, success},
		{"picked again before sending", balancer.DoneInfo{}, notCut, neutral},
		{"UNAVAILABLE", fail(codes.Unavailable), notCut, serverFailure},
		{"INTERNAL", fail(codes.Internal), notCut, serverFailure},
		{"UNKNOWN", fail(codes.Unknown), notCut, serverFailure},
		{"DATA_LOSS", fail(codes.DataLoss), notCut, serverFailure},
		{"DEADLINE_EXCEEDED", fail(codes.DeadlineExceeded), notCut, timedOut},
		{"NOT_FOUND", fail(codes.NotFound), notCut, success},
		{"INVALID_ARGUMENT", fail(codes.InvalidArgument), notCut, success},
		{"ALREADY_EXISTS", fail(codes.AlreadyExists), notCut, success},
		{"FAILED_PRECONDITION", fail(codes.FailedPrecondition), notCut, success},
		{"PERMISSION_DENIED", fail(codes.PermissionDenied), notCut, success},
		{"RESOURCE_EXHAUSTED", fail(codes.ResourceExhausted), notCut, success},
		{"UNIMPLEMENTED", fail(codes.Unimplemented), notCut, success},
		{"CANCELLED by the caller", fail(codes.Canceled), notCut, neutral},
		{"cut: stalled", fail(codes.Canceled), stalled, neutral},
		{"cut: another attempt answered", fail(codes.Canceled), lost, neutral},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := outcomeOf(tt.di, tt.cut); got != tt.want {
				t.Errorf("outcomeOf = %v, want %v", got, tt.want)
			}
		})
	}
}

// outlierFleet is n instances of rollcall_p2c_ewma with cfg's traffic,
// whose log lines are kept.
func outlierFleet(t *testing.T, cfg string, n int) ([]endpoint, *loadAware, *logLines) {
	t.Helper()
	eps, lb := testFleet(t, pickers[0].parse, cfg, n)
	lines := &logLines{}
	lb.logger = slog.New(lines)
	return eps, lb, lines
}

// repeat ends n attempts of st with di, at now.
func repeat(st *addrState, n int, di balancer.DoneInfo, now time.Duration) {
	for range n {
		end(st, di, now)
	}
}

// end ends one attempt of st with di, at now, as pickRecord.finish does.
func end(st *addrState, di balancer.DoneInfo, now time.Duration) {
	st.stats.picked.Add(1)
	st.stats.ended.Add(1)
	st.account(outcomeOf(di, notCut), now)
}

// Five server failures in a row eject an instance for the base time;
// five of any application code never do; nor do timeouts alone.
func TestConsecutiveFailuresEject(t *testing.T) {
	tests := []struct {
		code  codes.Code
		eject bool
	}{
		{codes.Internal, true},
		{codes.Unavailable, true},
		{codes.Unknown, true},
		{codes.DataLoss, true},
		{codes.NotFound, false},
		{codes.InvalidArgument, false},
		{codes.AlreadyExists, false},
		{codes.FailedPrecondition, false},
		{codes.PermissionDenied, false},
		{codes.DeadlineExceeded, false},
	}
	for _, tt := range tests {
		t.Run(tt.code.String(), func(t *testing.T) {
			eps, _, _ := outlierFleet(t, `{"outlierEjection":{"failurePercentage":0}}`, 3)
			st := eps[0].state
			repeat(st, 4, fail(tt.code), t0)
			if st.out.ejected(t0) {
				t.Fatal("ejected after 4 failures, want 5")
			}
			repeat(st, 1, fail(tt.code), t0)
			if got := st.out.ejected(t0); got != tt.eject {
				t.Fatalf("after 5 %v: ejected %v, want %v", tt.code, got, tt.eject)
			}
			if tt.eject && time.Duration(st.out.ejectedUntil.Load()) != t0+30*time.Second {
				t.Errorf("ejected until %v, want the base ejection time, 30s, after", time.Duration(st.out.ejectedUntil.Load())-t0)
			}
		})
	}
}

// An answer between failures starts the count again.
func TestAnswerResetsTheCount(t *testing.T) {
	eps, _, _ := outlierFleet(t, `{"outlierEjection":{"failurePercentage":0}}`, 3)
	st := eps[0].state
	for range 10 {
		repeat(st, 4, fail(codes.Internal), t0)
		repeat(st, 1, fail(codes.NotFound), t0)
	}
	if st.out.ejected(t0) {
		t.Error("ejected, though no five failures came in a row")
	}
}

// At most a third of the instances are ejected; when more than half are
// ejected or failing, panic mode begins, says so once, and picks ignore
// the ejections.
func TestEjectionCapAndPanicMode(t *testing.T) {
	eps, lb, lines := outlierFleet(t, `{"outlierEjection":{"failurePercentage":0}}`, 6)
	failing := func(k int) {
		repeat(eps[k].state, 5, fail(codes.Internal), t0)
	}
	ejected := func() int {
		n := 0
		for _, ep := range eps {
			if ep.state.out.ejected(t0) {
				n++
			}
		}
		return n
	}
	steps := []struct {
		failing, ejected int
		panic            bool
	}{
		{1, 1, false},
		{2, 2, false},
		{3, 2, false}, // the cap: 2 of 6; 3 unhealthy of 6 is not more than half
		{4, 2, true},
	}
	for i, step := range steps {
		failing(i)
		if got := ejected(); got != step.ejected {
			t.Errorf("%d failing of 6: %d ejected, want %d", step.failing, got, step.ejected)
		}
		if got := lb.panic.Load(); got != step.panic {
			t.Errorf("%d failing of 6: panic %v, want %v", step.failing, got, step.panic)
		}
	}
	p := newP2CPicker(eps, lb.cfg, lb)
	picked := map[*addrState]bool{}
	for range 600 {
		a := &Attempt{}
		_, err := p.Pick(balancer.PickInfo{Ctx: WithAttempt(context.Background(), a)})
		if err != nil {
			t.Fatal(err)
		}
		picked[a.picked.Load()] = true
		a.End(errCanceled)
	}
	for i, ep := range eps {
		if !picked[ep.state] {
			t.Errorf("in panic mode, instance %d (ejected: %v) got no pick of 600", i, ep.state.out.ejected(t0))
		}
	}
	if s := lb.fleet.Status(); !s.Panic || s.Panics != 1 || s.Ejected.Local != 2 || s.Ejections.Local != 2 {
		t.Errorf("status %+v, want panic, entered once, 2 ejected", s)
	}
	if n := lines.count("panic mode"); n != 1 {
		t.Errorf("%d log lines about panic mode, want 1:\n%s", n, lines)
	}
}

// An ejected instance comes back on its own when its time is over; if
// it fails again, its next ejection is longer, and one that served well
// for long enough starts again from the base time.
func TestEjectionEndsAndGrows(t *testing.T) {
	eps, lb, _ := outlierFleet(t, `{"outlierEjection":{"failurePercentage":0,"baseEjectionTime":"10s","maxEjectionTime":"25s"}}`, 3)
	st := eps[0].state
	until := func() time.Duration { return time.Duration(st.out.ejectedUntil.Load()) }
	now := t0
	wants := []time.Duration{10 * time.Second, 20 * time.Second, 25 * time.Second} // the third at the cap
	for _, want := range wants {
		repeat(st, 5, fail(codes.Internal), now)
		if got := until() - now; got != want {
			t.Fatalf("ejected for %v, want %v", got, want)
		}
		now = until()
		lb.snapshot(now) // a pick's rebuild of its view ends it
		if st.out.ejected(now) || until() != 0 {
			t.Fatalf("still ejected at its end")
		}
	}
	// Back for two and a half base times: two fewer in the row.
	now += 25 * time.Second
	repeat(st, 5, fail(codes.Internal), now)
	if got := until() - now; got != 20*time.Second {
		t.Errorf("ejected for %v after serving 25s, want 20s (the fourth in a row, less two)", got)
	}
}

// The failure percentage ejects an instance whose share of failed and
// timed-out attempts over an interval is over the line and over twice its
// peers'; a fault all instances share ejects none.
func TestFailurePercentageAgainstPeers(t *testing.T) {
	bad := fail(codes.Internal)
	slow := fail(codes.DeadlineExceeded)
	tests := []struct {
		name  string
		own   []balancer.DoneInfo // one interval of instance 0, repeated
		peers []balancer.DoneInfo // of the others
		eject bool
	}{
		{"two thirds fail, peers fine", []balancer.DoneInfo{bad, bad, okAnswer}, []balancer.DoneInfo{okAnswer}, true},
		{"two thirds time out, peers fine", []balancer.DoneInfo{slow, slow, okAnswer}, []balancer.DoneInfo{okAnswer}, true},
		{"two thirds fail, peers a fifth", []balancer.DoneInfo{bad, bad, okAnswer}, []balancer.DoneInfo{bad, okAnswer, okAnswer, okAnswer, okAnswer}, true},
		{"a third fail", []balancer.DoneInfo{bad, okAnswer, okAnswer}, []balancer.DoneInfo{okAnswer}, false},
		{"everyone fails two thirds", []balancer.DoneInfo{bad, bad, okAnswer}, []balancer.DoneInfo{bad, okAnswer, bad}, false},
		{"everyone times out two thirds", []balancer.DoneInfo{slow, slow, okAnswer}, []balancer.DoneInfo{okAnswer, slow, slow}, false},
		{"NOT_FOUND for all", []balancer.DoneInfo{fail(codes.NotFound)}, []balancer.DoneInfo{okAnswer}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eps, _, _ := outlierFleet(t, `{"outlierEjection":{"consecutiveFailures":0,"interval":"1s","minimumCalls":20}}`, 4)
			interval := func(st *addrState, pattern []balancer.DoneInfo, start time.Duration) {
				end(st, okAnswer, start) // opens the interval
				for i := range 40 {
					end(st, pattern[i%len(pattern)], start+time.Millisecond)
				}
			}
			for _, ep := range eps[1:] {
				interval(ep.state, tt.peers, t0)
				end(ep.state, okAnswer, t0+time.Second) // closes it
			}
			interval(eps[0].state, tt.own, t0)
			end(eps[0].state, okAnswer, t0+time.Second)
			if got := eps[0].state.out.ejected(t0 + time.Second); got != tt.eject {
				t.Errorf("ejected %v, want %v", got, tt.eject)
			}
		})
	}
}

// Ejection off (both rules 0) ejects nothing and never panics.
func TestEjectionOff(t *testing.T) {
	eps, lb, _ := outlierFleet(t, `{"outlierEjection":{"consecutiveFailures":0,"failurePercentage":0}}`, 3)
	for _, ep := range eps {
		repeat(ep.state, 100, fail(codes.Internal), t0)
	}
	for i, ep := range eps {
		if ep.state.out.ejected(t0) {
			t.Errorf("instance %d ejected with ejection off", i)
		}
	}
	if lb.panic.Load() {
		t.Error("panic mode with ejection off")
	}
}

// logLines is a slog.Handler that keeps the messages.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) Enabled(context.Context, slog.Level) bool { return true }
func (l *logLines) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.lines = append(l.lines, r.Message)
	l.mu.Unlock()
	return nil
}
func (l *logLines) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logLines) WithGroup(string) slog.Handler      { return l }

func (l *logLines) count(substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines {
		if strings.Contains(line, substr) {
			n++
		}
	}
	return n
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}
