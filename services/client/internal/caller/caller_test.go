package caller

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"

	greeterv1 "github.com/rollcall/rollcall/api/greeter/v1"
	"github.com/rollcall/rollcall/services/client/internal/config"
	"github.com/rollcall/rollcall/services/client/internal/stats"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// answerFunc is how a test greeter answers: id is its instance ID.
type answerFunc func(ctx context.Context, id string, req *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error)

// greet answers as the greeter service does, naming the instance.
func greet(_ context.Context, id string, req *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error) {
	return &greeterv1.SayHelloResponse{Message: fmt.Sprintf("Hello %s from %s", req.GetName(), id), InstanceId: id}, nil
}

// warmUp is the name of the calls startFleet makes before the test's:
// answered by greet, outside the test's answerFunc and counts.
const warmUp = "warm-up"

type greeterServer struct {
	greeterv1.UnimplementedGreeterServiceServer
	id     string
	answer answerFunc
}

func (g *greeterServer) SayHello(ctx context.Context, req *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error) {
	if req.GetName() == warmUp {
		return greet(ctx, g.id, req)
	}
	return g.answer(ctx, g.id, req)
}

// fleet is greeter servers on 127.0.0.1, one per ID, and a client that
// calls them round robin over real gRPC connections. The greeter's own
// service is internal to its module, so each server answers with an
// answerFunc.
type fleet struct {
	client greeterv1.GreeterServiceClient
	// started counts the calls the client began (warm-up excluded).
	started atomic.Int64
}

// startFleet serves the greeters until the test ends, and returns once
// every one of them has answered the client: from then on round robin
// takes them in turn.
func startFleet(t *testing.T, answer answerFunc, ids ...string) *fleet {
	t.Helper()
	f := &fleet{}
	var addrs []resolver.Address
	for _, id := range ids {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s := grpc.NewServer()
		greeterv1.RegisterGreeterServiceServer(s, &greeterServer{id: id, answer: answer})
		done := make(chan struct{})
		go func() { defer close(done); s.Serve(lis) }()
		t.Cleanup(func() { s.Stop(); <-done })
		addrs = append(addrs, resolver.Address{Addr: lis.Addr().String()})
	}
	r := manual.NewBuilderWithScheme("fleet")
	r.InitialState(resolver.State{Addresses: addrs})
	count := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if req.(*greeterv1.SayHelloRequest).GetName() != warmUp {
			f.started.Add(1)
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	cc, err := grpc.NewClient(r.Scheme()+":///greeter",
		grpc.WithResolvers(r),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
		grpc.WithUnaryInterceptor(count),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	f.client = greeterv1.NewGreeterServiceClient(cc)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	seen := map[string]bool{}
	for len(seen) < len(ids) {
		resp, err := f.client.SayHello(ctx, &greeterv1.SayHelloRequest{Name: warmUp}, grpc.WaitForReady(true))
		if err != nil {
			t.Fatalf("warm-up: greeters %v never all answered (seen %v): %v", ids, slices.Collect(maps.Keys(seen)), err)
		}
		seen[resp.GetInstanceId()] = true
	}
	return f
}

// holder holds calls until they are cut, and closes full once n of them
// are held at the same time.
type holder struct {
	n    int
	full chan struct{}

	mu   sync.Mutex
	held int
}

func newHolder(n int) *holder { return &holder{n: n, full: make(chan struct{})} }

func (h *holder) hold(ctx context.Context) error {
	h.mu.Lock()
	if h.held++; h.held == h.n {
		close(h.full)
	}
	h.mu.Unlock()
	<-ctx.Done()
	h.mu.Lock()
	h.held--
	h.mu.Unlock()
	return status.FromContextError(ctx.Err()).Err()
}

// await waits, up to 30 s, until n calls are held.
func (h *holder) await(t *testing.T) {
	t.Helper()
	select {
	case <-h.full:
	case <-time.After(30 * time.Second):
		t.Fatalf("%d calls were never held at once", h.n)
	}
}

// output is a file for the caller's output: its view and its calls write
// from different goroutines, and a file takes each write whole. Read it
// once Run has returned.
type output struct{ f *os.File }

func newOutput(t *testing.T) output {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return output{f}
}

func (o output) String() string {
	b, err := os.ReadFile(o.f.Name())
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// calls is the configuration of the tests' callers: demo mode, fast, with
// a deadline no test call reaches unless it means to.
func calls(view string) config.Calls {
	return config.Calls{Name: "rollcall", Mode: config.ModeDemo, Rate: 1000, Concurrency: 1, Timeout: 30 * time.Second, View: view}
}

// run is a Caller running on client with cfg; stop ends the run and
// returns its output.
type run struct {
	rec  *stats.Recorder
	out  output
	stop func(t *testing.T) string
}

func start(t *testing.T, cfg config.Calls, client greeterv1.GreeterServiceClient) *run {
	t.Helper()
	r := &run{rec: stats.NewRecorder(), out: newOutput(t)}
	c := New(cfg, client, r.rec, nil) // no json view: no instances tracker
	c.out = r.out.f
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- c.Run(ctx) }()
	t.Cleanup(cancel)
	r.stop = func(t *testing.T) string {
		t.Helper()
		cancel()
		select {
		case err := <-ran:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Run did not return within 30s of its context's end")
		}
		return r.out.String()
	}
	return r
}

// callLines are the lines of out that show one call each.
func callLines(out string) []string {
	var lines []string
	for line := range strings.Lines(out) {
		if strings.HasPrefix(line, "call ") {
			lines = append(lines, strings.TrimSuffix(line, "\n"))
		}
	}
	return lines
}

var answerLine = regexp.MustCompile(`^call (\d+): Hello rollcall from (g\d)  \(\S+\)$`)

func TestDemoPrintsEachAnswerNamingTheInstanceThatGaveIt(t *testing.T) {
	var n atomic.Int64
	h := newHolder(1)
	f := startFleet(t, func(ctx context.Context, id string, req *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error) {
		if n.Add(1) <= 4 {
			return greet(ctx, id, req)
		}
		return nil, h.hold(ctx)
	}, "g1", "g2")
	r := start(t, calls("lines"), f.client)
	h.await(t) // call 5 is held: calls 1-4 are printed
	out := r.stop(t)

	lines := callLines(out)
	perInstance := map[string]int{}
	for i, line := range lines {
		m := answerLine.FindStringSubmatch(line)
		if m == nil || m[1] != fmt.Sprint(i+1) {
			t.Errorf("line %q, want \"call %d: Hello rollcall from <instance>  (<latency>)\"", line, i+1)
			continue
		}
		perInstance[m[2]]++
	}
	if len(lines) != 4 {
		t.Errorf("%d call lines, want 4 (the 5th was cut by the end):\n%s", len(lines), out)
	}
	if !maps.Equal(perInstance, map[string]int{"g1": 2, "g2": 2}) {
		t.Errorf("answers per instance %v, want 2 each from round robin over g1, g2", perInstance)
	}
	got := map[string]int{}
	for _, row := range r.rec.Summary().Instances {
		got[row.Instance] = row.Calls
	}
	if !maps.Equal(got, perInstance) {
		t.Errorf("recorded calls per instance %v, want those printed, %v", got, perInstance)
	}
	if i := strings.Index(out, "\nsummary:\n"); i < 0 || i < strings.LastIndex(out, "call 4:") {
		t.Errorf("no \"summary:\" after the calls:\n%s", out)
	}
	if strings.Contains(out, "\n{") {
		t.Errorf("demo mode printed a JSON summary:\n%s", out)
	}
}

func TestDemoShowsAFailedCallWithItsCodeCountedUnderNoInstance(t *testing.T) {
	var n atomic.Int64
	h := newHolder(1)
	f := startFleet(t, func(ctx context.Context, id string, req *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error) {
		if n.Add(1) == 1 {
			return nil, status.Error(codes.NotFound, "no such greeting")
		}
		return nil, h.hold(ctx)
	}, "g1")
	r := start(t, calls("lines"), f.client)
	h.await(t)
	out := r.stop(t)

	lines := callLines(out)
	want := regexp.MustCompile(`^call 1: error after \S+: rpc error: code = NotFound desc = no such greeting$`)
	if len(lines) != 1 || !want.MatchString(lines[0]) {
		t.Errorf("call lines %q, want one matching %s", lines, want)
	}
	s := r.rec.Summary()
	wantRows := []stats.Row{{Instance: stats.Unknown, Calls: 1, Errors: 1, Share: 1}}
	if !slices.Equal(s.Instances, wantRows) || !maps.Equal(s.Codes, map[string]int{"NotFound": 1}) {
		t.Errorf("rows %+v, codes %v; want %+v, NotFound: 1", s.Instances, s.Codes, wantRows)
	}
}

// -view lines (and auto, off a terminal) prints every call; none prints
// only the summary.
func TestViewDecidesWhetherEachCallIsPrinted(t *testing.T) {
	for _, tt := range []struct {
		view      string
		wantLines int
	}{{"lines", 2}, {"auto", 2}, {"none", 0}} {
		t.Run(tt.view, func(t *testing.T) {
			var n atomic.Int64
			h := newHolder(1)
			f := startFleet(t, func(ctx context.Context, id string, req *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error) {
				if n.Add(1) <= 2 {
					return greet(ctx, id, req)
				}
				return nil, h.hold(ctx)
			}, "g1")
			r := start(t, calls(tt.view), f.client)
			h.await(t)
			out := r.stop(t)
			if got := len(callLines(out)); got != tt.wantLines {
				t.Errorf("%d call lines, want %d:\n%s", got, tt.wantLines, out)
			}
			if tt.view == "none" && !strings.HasPrefix(out, "summary:\n") {
				t.Errorf("view none printed before the summary:\n%s", out)
			}
		})
	}
}

func TestCallOverItsTimeoutFailsWithDeadlineExceeded(t *testing.T) {
	const timeout = time.Second
	var n atomic.Int64
	deadlines := make(chan time.Duration, 1)
	h := newHolder(1)
	f := startFleet(t, func(ctx context.Context, _ string, _ *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error) {
		if n.Add(1) == 1 {
			d, ok := ctx.Deadline()
			if !ok {
				d = time.Now().Add(time.Hour)
			}
			deadlines <- time.Until(d)
			<-ctx.Done() // answer too late
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		return nil, h.hold(ctx)
	}, "g1")
	cfg := calls("lines")
	cfg.Timeout = timeout
	r := start(t, cfg, f.client)
	h.await(t)
	out := r.stop(t)

	// Time only shortens what is left of a deadline: more than the
	// timeout left means the caller set a later one, or none.
	select {
	case left := <-deadlines:
		if left > timeout {
			t.Errorf("the greeter saw %v left of the call's deadline, want at most the timeout %v", left, timeout)
		}
	default:
		t.Error("call 1 never reached the greeter")
	}
	lines := callLines(out)
	if len(lines) != 1 || !strings.Contains(lines[0], "code = DeadlineExceeded") {
		t.Errorf("call lines %q, want call 1 failed with code DeadlineExceeded", lines)
	}
	if s := r.rec.Summary(); s.Errors != 1 || !maps.Equal(s.Codes, map[string]int{"DeadlineExceeded": 1}) {
		t.Errorf("%d errors, codes %v; want 1 error, DeadlineExceeded: 1", s.Errors, s.Codes)
	}
}

// runToEnd runs a Caller with cfg on client until it stops by itself
// (its duration), and returns its recorder and output.
func runToEnd(t *testing.T, cfg config.Calls, client greeterv1.GreeterServiceClient) (*stats.Recorder, string) {
	t.Helper()
	rec := stats.NewRecorder()
	c := New(cfg, client, rec, nil)
	out := newOutput(t)
	c.out = out.f
	ran := make(chan error, 1)
	go func() { ran <- c.Run(context.Background()) }()
	select {
	case err := <-ran:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("Run went on 30s past its %v duration", cfg.Duration)
	}
	return rec, out.String()
}

// The duration's end cuts the call in flight: that is the end of the
// run, not a failure to show or count.
func TestDemoEndingAtItsDurationCountsTheCutCallAsNoFailure(t *testing.T) {
	var n atomic.Int64
	f := startFleet(t, func(ctx context.Context, id string, req *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error) {
		if n.Add(1) == 1 {
			return greet(ctx, id, req)
		}
		<-ctx.Done() // until the run's end cuts it
		return nil, status.FromContextError(ctx.Err()).Err()
	}, "g1")
	cfg := calls("lines")
	cfg.Duration = 300 * time.Millisecond
	rec, out := runToEnd(t, cfg, f.client)
	if lines := callLines(out); len(lines) != 1 || !answerLine.MatchString(lines[0]) {
		t.Errorf("call lines %q, want call 1's answer only", lines)
	}
	if s := rec.Summary(); s.Calls != 1 || s.Errors != 0 {
		t.Errorf("%d calls, %d errors (codes %v); want call 1 only, no error", s.Calls, s.Errors, s.Codes)
	}
}

// startLoadHeld runs the load mode with every call held by the greeters,
// and stops it once concurrency calls are held: it returns how many calls
// the caller began and its output.
func startLoadHeld(t *testing.T, concurrency int) (started int64, rec *stats.Recorder, out string) {
	t.Helper()
	h := newHolder(concurrency)
	f := startFleet(t, func(ctx context.Context, _ string, _ *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error) {
		return nil, h.hold(ctx)
	}, "g1", "g2")
	cfg := calls("none")
	cfg.Mode, cfg.Concurrency = config.ModeLoad, concurrency
	r := start(t, cfg, f.client)
	h.await(t)
	out = r.stop(t)
	// Run has returned: its workers are gone, so the count is final.
	return f.started.Load(), r.rec, out
}

// With every call held, each worker has exactly one call out: the calls
// begun are the workers.
func TestLoadKeepsConcurrencyCallsInFlight(t *testing.T) {
	const concurrency = 5
	if started, _, _ := startLoadHeld(t, concurrency); started != concurrency {
		t.Errorf("%d calls begun while all were held, want one per worker, %d", started, concurrency)
	}
}

// Calls the end of the run cuts are not the service's failures.
func TestCallsCutByTheEndOfTheRunAreNotCounted(t *testing.T) {
	_, rec, out := startLoadHeld(t, 3)
	if s := rec.Summary(); s.Calls != 0 || s.Errors != 0 || len(s.Codes) != 0 {
		t.Errorf("%d calls, %d errors, codes %v; want none counted", s.Calls, s.Errors, s.Codes)
	}
	if callLines(out) != nil {
		t.Errorf("load mode printed calls:\n%s", out)
	}
}

func TestLoadStopsAfterItsDurationAndPrintsTheSummaryAsJSON(t *testing.T) {
	f := startFleet(t, greet, "g1", "g2")
	cfg := calls("none")
	cfg.Mode, cfg.Concurrency, cfg.Duration = config.ModeLoad, 4, 200*time.Millisecond
	rec, out := runToEnd(t, cfg, f.client)

	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if lines[0] != "summary:" {
		t.Errorf("output does not begin with \"summary:\":\n%s", out)
	}
	var s stats.Summary
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &s); err != nil {
		t.Fatalf("last line is not the JSON summary: %v\n%s", err, out)
	}
	perInstance := map[string]int{}
	sum := 0
	for _, row := range s.Instances {
		perInstance[row.Instance] = row.Calls
		sum += row.Calls
	}
	if s.Calls == 0 || s.Errors != 0 || sum != s.Calls || !maps.Equal(s.Codes, map[string]int{"OK": s.Calls}) {
		t.Errorf("JSON summary: %d calls (%d over the instances), %d errors, codes %v; want calls, all OK", s.Calls, sum, s.Errors, s.Codes)
	}
	if perInstance["g1"] == 0 || perInstance["g2"] == 0 || len(perInstance) != 2 {
		t.Errorf("calls per instance %v, want some on each of g1, g2", perInstance)
	}
	if rs := rec.Summary(); rs.Calls != s.Calls || rs.Errors != s.Errors {
		t.Errorf("JSON says %d calls, %d errors; the recorder %d, %d", s.Calls, s.Errors, rs.Calls, rs.Errors)
	}
}
