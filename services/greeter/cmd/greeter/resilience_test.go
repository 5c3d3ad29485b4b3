package main_test

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	greeterv1 "github.com/rollcall/rollcall/api/greeter/v1"
	"github.com/rollcall/rollcall/pkg/balance"
	"github.com/rollcall/rollcall/pkg/call"
	"github.com/rollcall/rollcall/pkg/discovery/resolve"
	"github.com/rollcall/rollcall/pkg/etcdtest"
)

// fleet is etcd and greeter processes that each serve their metrics, so
// that a test can count the calls the servers saw.
type fleet struct {
	etcd     *etcdtest.Server
	greeters []*greeter
	metrics  []string // each greeter's metrics address
	warmups  int      // calls dial made
}

func startFleet(t *testing.T, n int, flags ...string) *fleet {
	t.Helper()
	f := &fleet{etcd: etcdtest.Start(t)}
	for i := 1; i <= n; i++ {
		g, rec := startGreeter(t, f.etcd.Endpoint(), fmt.Sprintf("g%d", i), "serving metrics",
			append([]string{"-metrics-listen", "127.0.0.1:0"}, flags...)...)
		f.greeters = append(f.greeters, g)
		f.metrics = append(f.metrics, rec["addr"].(string))
	}
	return f
}

// dial returns a client of the fleet through call.Dial with opts, once
// every instance has answered (with an error of the application's too).
func (f *fleet) dial(t *testing.T, opts ...call.Option) greeterv1.GreeterServiceClient {
	t.Helper()
	client := newClient(t, f.etcd, opts...)
	seen := map[string]bool{}
	deadline := time.Now().Add(30 * time.Second)
	for len(seen) < len(f.greeters) && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var p peer.Peer
		f.warmups++
		_, err := client.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "warmup"}, grpc.WaitForReady(true), grpc.Peer(&p))
		cancel()
		if code := status.Code(err); code != codes.Unavailable && code != codes.DeadlineExceeded && p.Addr != nil {
			seen[p.Addr.String()] = true
		}
	}
	if len(seen) < len(f.greeters) {
		t.Fatalf("only %v of %d instances answered", seen, len(f.greeters))
	}
	return client
}

var startedLine = regexp.MustCompile(`grpc_server_started_total\{grpc_method="SayHello",[^}]*\} (\d+)`)

// served is how many SayHello calls the greeters have started, as their
// metrics count them.
func (f *fleet) served(t *testing.T) int {
	t.Helper()
	total := 0
	for i := range f.metrics {
		total += f.servedBy(t, i)
	}
	return total
}

// servedBy is served for the i-th greeter alone.
func (f *fleet) servedBy(t *testing.T, i int) int {
	t.Helper()
	if m := startedLine.FindStringSubmatch(scrape(t, f.metrics[i])); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return 0
}

// callMany makes n SayHello calls from workers goroutines, each with its
// own deadline, and returns the codes they ended with and the instances
// that answered.
func callMany(client greeterv1.GreeterServiceClient, n, workers int, deadline time.Duration) (map[codes.Code]int, map[string]int) {
	var mu sync.Mutex
	codesSeen, byID := map[codes.Code]int{}, map[string]int{}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				ctx, cancel := context.WithTimeout(context.Background(), deadline)
				resp, err := client.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "test"})
				cancel()
				mu.Lock()
				codesSeen[status.Code(err)]++
				if err == nil {
					byID[resp.GetInstanceId()]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return codesSeen, byID
}

// A method that takes 60 % of the caller's deadline succeeds, as it does
// on a plain connection, and each call reaches a server once: no attempt
// is cut short and sent again.
func TestIdempotentCallTakingMostOfItsDeadlineSucceeds(t *testing.T) {
	f := startFleet(t, 3, "-latency", "600ms")
	client := f.dial(t)
	before := f.served(t)
	const calls = 30
	got, _ := callMany(client, calls, 10, time.Second)
	if got[codes.OK] != calls {
		t.Errorf("%d calls of a 600 ms method with a 1 s deadline ended %v; want all OK", calls, got)
	}
	if served := f.served(t) - before; served > calls*11/10 {
		t.Errorf("servers saw %d calls for %d client calls; want at most 1.1 per call", served, calls)
	}
}

// A call left unanswered past its hedge delay is answered by another
// instance, long before the first would have answered.
func TestHedgeIsAnsweredByAnotherInstance(t *testing.T) {
	f := startFleet(t, 1, "-latency", "1h")
	_, reg := startGreeter(t, f.etcd.Endpoint(), "fast", "registered in etcd")
	fastAddr := reg["addr"].(string)
	rb, err := resolve.NewBuilder(f.etcd.Client())
	if err != nil {
		t.Fatal(err)
	}
	// rollcall_weighted sends every other call to the instance that never
	// answers; its deadline (3 s) is far below that instance's latency.
	rec := newRecorder()
	// Every other call needs a hedge: far more than the default budget
	// allows, which is not what this test is about.
	conn, err := call.Dial(rb, "greeter", call.WithPolicy(balance.Weighted), call.WithObserver(rec),
		call.WithHedgeDelay("/greeter.v1.GreeterService/SayHello", 50*time.Millisecond), call.WithRetryBudget(1, 100))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := greeterv1.NewGreeterServiceClient(conn)
	// Until both connections are ready, a hedge may have only the slow
	// instance to go to.
	for ok := false; !ok; {
		got, _ := callMany(client, 1, 1, time.Second)
		ok = got[codes.OK] == 1
	}
	got, byID := callMany(client, 20, 4, 3*time.Second)
	if got[codes.OK] != 20 || byID["fast"] != 20 {
		t.Errorf("20 calls ended %v, answered by %v; want all OK from fast (extra attempts %v, refused %v)", got, byID, rec.extra, rec.denied)
	}
	// What the caller asked to learn of the call (peer, header) is the
	// answering attempt's, not the cut one's.
	for range 4 {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		var p peer.Peer
		_, err := client.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "peer"}, grpc.Peer(&p))
		cancel()
		if err != nil || p.Addr == nil || p.Addr.String() != fastAddr {
			t.Errorf("call ended %v with peer %v; want the answering instance %s", err, p.Addr, fastAddr)
		}
	}
}

// recorder counts the extra attempts Dial's machinery reports.
type recorder struct {
	mu     sync.Mutex
	extra  map[string]int
	denied map[string]int
}

func newRecorder() *recorder { return &recorder{extra: map[string]int{}, denied: map[string]int{}} }

func (r *recorder) Dialed(string, call.Budget) {}
func (r *recorder) ExtraAttempt(_, kind string) {
	r.mu.Lock()
	r.extra[kind]++
	r.mu.Unlock()
}

// total is how many extra attempts were made. r.mu is held.
func (r *recorder) total() int {
	n := 0
	for _, c := range r.extra {
		n += c
	}
	return n
}

func (r *recorder) Denied(_, kind string) {
	r.mu.Lock()
	r.denied[kind]++
	r.mu.Unlock()
}

// Calls in flight on an instance that stops (SIGSTOP) are cut when its
// heartbeat stops and answered by another instance, well within their
// deadline; without that they would wait out the deadline.
func TestAttemptsOnAStalledInstanceMoveElsewhere(t *testing.T) {
	f := startFleet(t, 3, "-latency", "2s") // calls stay in flight long enough to be caught
	rec := newRecorder()
	// Hedging off, so only the stall can move a call; rollcall_weighted
	// sends every third call to g2.
	client := f.dial(t, call.WithPolicy(balance.Weighted), call.WithoutHedging(), call.WithObserver(rec), call.WithRetryBudget(1, 100))
	before := f.servedBy(t, 1)
	type result struct {
		codes map[codes.Code]int
		byID  map[string]int
	}
	done := make(chan result, 1)
	go func() {
		got, byID := callMany(client, 9, 9, 20*time.Second)
		done <- result{got, byID}
	}()
	// Once g2 has calls in flight, stop it.
	for deadline := time.Now().Add(20 * time.Second); f.servedBy(t, 1) < before+3; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("g2 never had 3 calls in flight")
		}
	}
	stopped := f.greeters[1].proc
	if err := stopped.Pause(); err != nil {
		t.Fatal(err)
	}
	defer stopped.Signal(syscall.SIGCONT)
	r := <-done
	if r.codes[codes.OK] != 9 || r.byID["g2"] != 0 {
		t.Errorf("9 calls, 3 of them caught on g2 by SIGSTOP, ended %v, answered by %v; want all OK, none by g2", r.codes, r.byID)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.extra[call.KindStall] < 3 {
		t.Errorf("extra attempts %v: want 3 of kind %q", rec.extra, call.KindStall)
	}
}

// When every instance answers UNAVAILABLE, retries stay within the
// budget (10 % of calls plus a small floor), and once the instances
// recover every call succeeds.
func TestOutageDoesNotMultiplyCalls(t *testing.T) {
	f := startFleet(t, 3)
	rec := newRecorder()
	client := f.dial(t, call.WithObserver(rec))
	for _, g := range f.greeters {
		g.signal(t, syscall.SIGUSR1, "outage drill")
	}
	before := f.served(t)
	const calls = 300
	got, _ := callMany(client, calls, 8, 5*time.Second)
	served := f.served(t) - before
	if got[codes.Unavailable] != calls {
		t.Errorf("%d calls during the outage ended %v; want all UNAVAILABLE", calls, got)
	}
	// The budget: 10 % of the calls of the last 10 s (the warm-up's too),
	// plus 1 a second over those 10 s.
	if limit := calls + (calls+f.warmups)/10 + 10; served > limit {
		rec.mu.Lock()
		t.Errorf("servers saw %d calls for %d client calls during the outage; want at most %d (extra attempts %v, refused %v)",
			served, calls, limit, rec.extra, rec.denied)
		rec.mu.Unlock()
	}
	for _, g := range f.greeters {
		g.signal(t, syscall.SIGUSR2, "outage drill")
	}
	if got, _ := callMany(client, 100, 8, 5*time.Second); got[codes.OK] != 100 {
		t.Errorf("100 calls after the outage ended %v; want all OK", got)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.denied[call.KindRetry] == 0 {
		t.Errorf("the budget refused no retry during the outage (extra attempts %v)", rec.extra)
	}
}

// An application's error is an answer: it is returned as it is and never
// retried. A server sees each call once, and at most the hedges and
// stall cuts (counted) that a slow answer of any kind may bring.
func TestApplicationErrorsAreNotRetried(t *testing.T) {
	f := startFleet(t, 3, "-fail-rate", "1", "-fail-code", "NOT_FOUND")
	rec := newRecorder()
	client := f.dial(t, call.WithObserver(rec))
	before := f.served(t)
	rec.mu.Lock()
	extraBefore := rec.total()
	rec.mu.Unlock()
	const calls = 100
	got, _ := callMany(client, calls, 8, 5*time.Second)
	if got[codes.NotFound] != calls {
		t.Errorf("%d calls ended %v; want all NOT_FOUND", calls, got)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.extra[call.KindRetry] != 0 {
		t.Errorf("%d retries; want none (extra attempts %v)", rec.extra[call.KindRetry], rec.extra)
	}
	// An extra attempt cut before it was sent reaches no server.
	if served, extra := f.served(t)-before, rec.total()-extraBefore; served < calls || served > calls+extra {
		t.Errorf("servers saw %d calls for %d client calls and %d extra attempts (%v); want one each, and the extra ones at most", served, calls, extra, rec.extra)
	}
}
