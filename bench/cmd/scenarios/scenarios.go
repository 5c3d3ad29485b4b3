package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	greeterv1 "github.com/rollcall/rollcall/api/greeter/v1"
	"github.com/rollcall/rollcall/pkg/balance"
	"github.com/rollcall/rollcall/pkg/call"
)

// timing is how long each phase of a scenario lasts.
type timing struct {
	warm, after, etcdDown time.Duration
	scaleEvents, bursts   int
	throughput            time.Duration
}

var (
	full  = timing{warm: 2 * time.Second, after: 5 * time.Second, etcdDown: 10 * time.Second, scaleEvents: 20, bursts: 3, throughput: 66 * time.Second}
	smoke = timing{warm: time.Second, after: 2 * time.Second, etcdDown: 3 * time.Second, scaleEvents: 3, bursts: 1, throughput: 2 * time.Second}
)

// result is one scenario run for one stack: one JSON line.
type result struct {
	Scenario    string             `json:"scenario"`
	Stack       string             `json:"stack"`
	Calls       int                `json:"calls"`
	Failed      int                `json:"failed"`
	Codes       map[string]int     `json:"codes,omitempty"`
	CallsPerSec float64            `json:"calls_per_second"`
	P99Ms       float64            `json:"p99_ms"`
	Metrics     map[string]float64 `json:"metrics,omitempty"`
	Error       string             `json:"error,omitempty"`
}

// scenario is one benchmark: what happens, the figure it reports, what
// rollcall must reach, and how it runs. docs/benchmarks.md and the results
// tables are made from these records.
type scenario struct {
	name string
	// event and figure describe the scenario in docs/benchmarks.md.
	event, figure string
	// describedWith names an earlier scenario whose row in the doc
	// describes this one too.
	describedWith string
	target        target

	// etcdMembers is the etcd cluster's size: 1 when zero.
	etcdMembers int
	// instances is how many greeters start: 3 when zero. flags, when set,
	// are each instance's extra greeter flags and set their number.
	instances int
	flags     [][]string
	// clientZone is the client's zone (rollcall: call.WithZone); the
	// instances' are their -zone flags.
	clientZone string
	// policies: run rollcall with each balancing policy instead of each
	// stack.
	policies bool
	// countsAttempts: the client counts every attempt it sends; the other
	// scenarios do without the cost of it.
	countsAttempts bool
	run            func(ctx context.Context, e *env, t timing, r *result) error
	// runAlone, set instead of run, starts its own processes rather than a
	// stack's greeters and client; it runs once, for rollcall.
	runAlone func(ctx context.Context, bin string, short bool, r *result) error
	// stacks, when set, are the stacks the scenario runs with.
	stacks func(bin string) []stack
	// group puts the scenario in a section of the doc and a table of its
	// own, written only when a run has results of it.
	group string
}

// Groups of scenarios with their own section.
const (
	groupXDS    = "xds"
	groupModels = "models"
)

// target is what rollcall must reach in a scenario.
type target struct {
	text string
	// check returns the results table's cell for r and whether r meets
	// the target.
	check func(r result) (cell string, met bool)
}

func (s scenario) members() int {
	if s.etcdMembers == 0 {
		return 1
	}
	return s.etcdMembers
}

// greeterFlags is each instance's extra flags, one entry per instance.
func (s scenario) greeterFlags() [][]string {
	if s.flags != nil {
		return s.flags
	}
	if s.instances == 0 {
		return make([][]string, 3)
	}
	return make([][]string, s.instances)
}

// policies are the balancing policies the balancing scenarios compare;
// recommended is the one their targets are for.
var (
	policies    = []string{"round_robin", "least_request_experimental", balance.Weighted, balance.P2CEWMA}
	recommended = balance.P2CEWMA
)

// fast is the handler latency of a normal instance in the balancing
// scenarios; a slow one answers ten times slower.
var fast = []string{"-latency", "2ms"}

// weight is a fast instance registered with weight w.
func weight(w int) []string { return append(fast[:len(fast):len(fast)], "-weight", fmt.Sprint(w)) }

// scenarios run in this order, and are described and tabled in it.
var scenarios = []scenario{
	{
		name: "kill", countsAttempts: true, run: stopOne(syscall.SIGKILL),
		event: "`kill -9` of one instance", figure: "failed calls out of all calls", target: lossless,
	},
	{
		name: "term", countsAttempts: true, run: stopOne(syscall.SIGTERM),
		event: "SIGTERM of one instance", figure: "failed calls", target: lossless,
	},
	{
		name: "rolling", countsAttempts: true, run: runRolling,
		event:  "each instance replaced in turn (new one up and registered, old one SIGTERM)",
		figure: "failed calls; new instances that served calls",
		target: target{text: "0 failed; 3 new served; <= 1.05 attempts/call", check: func(r result) (string, bool) {
			f, ok := failedCalls(r)
			n := r.Metrics["new_instances_served"]
			a, aok := attempts(r, 1.05)
			return fmt.Sprintf("%s; %.0f new served; %s", f, n, a), ok && n == 3 && aok
		}},
	},
	{
		name: "scale-up", run: runScaleUp,
		event:  "a fourth instance starts, 20 times",
		figure: "time from its key's PUT event in etcd to the first call it serves (p50, p99)",
		target: target{text: "first call <= 100 ms (p99)", check: func(r result) (string, bool) {
			p := r.Metrics["first_call_p99_ms"]
			return fmt.Sprintf("p50 %.1f ms, p99 %.1f ms", r.Metrics["first_call_p50_ms"], p), r.Error == "" && p <= 100
		}},
	},
	{
		name: "etcd-down", run: etcdOutage(false),
		event:  "etcd `kill -9`, back after 10 s on the same data",
		figure: "failed calls; time from etcd healthy again to every instance's key present under a lease; keys still there one lease TTL (10 s) later",
		target: reregistered,
	},
	{
		name: "etcd-wiped", run: etcdOutage(true),
		event:  "etcd `kill -9`, its data deleted, an empty etcd on the same ports",
		figure: `as etcd-down ("never": not within 15 s)`,
		target: reregistered,
	},
	{
		name: "etcd-leader", etcdMembers: 3, run: runLeader,
		event:  "three-member etcd, its leader `kill -9`",
		figure: "failed calls; DELETE events on the instances' keys",
		target: target{text: "0 failed; 0 registrations lost", check: func(r result) (string, bool) {
			f, ok := failedCalls(r)
			lost := r.Metrics["registrations_lost"]
			return fmt.Sprintf("%s; %.0f lost", f, lost), ok && lost == 0
		}},
	},
	{
		name: "churn", run: runChurn,
		event:  "1,000 registrations put in 10 transactions, then deleted at once, 3 times",
		figure: "longest time from etcd's answer to the resolver's list having the same size; CPU of the client process; heap in use after",
		target: target{text: "list = etcd's within 1 s", check: func(r result) (string, bool) {
			c := r.Metrics["converge_max_ms"]
			return fmt.Sprintf("%.0f ms; cpu %.0f ms; heap %.1f MB", c, r.Metrics["client_cpu_ms"], r.Metrics["heap_inuse_mb"]), r.Error == "" && c <= 1000
		}},
	},
	{
		name: "throughput", instances: 1, run: runThroughput,
		event: "no event, one instance",
		figure: "calls per second through discovery and balancing vs over one direct connection to the same instance: " +
			"the mean ratio of 135 pairs of half-second rounds, one each way in alternating order, less the tenth highest " +
			"and lowest, with the middle half of the pairs' ratios (how far one pair is from the next on this machine); " +
			"the client's and the instance's CPU per call each way",
		target: target{text: "ratio >= 0.99", check: func(r result) (string, bool) {
			ratio := r.Metrics["ratio"]
			text := fmt.Sprintf("%.0f/s vs %.0f/s direct: mean pair %.3f (middle half %.2f-%.2f); client CPU %.1f vs %.1f µs/call",
				r.CallsPerSec, r.Metrics["direct_calls_per_second"], ratio, r.Metrics["ratio_q1"], r.Metrics["ratio_q3"],
				r.Metrics["client_cpu_us_per_call"], r.Metrics["direct_client_cpu_us_per_call"])
			if srv, ok := r.Metrics["server_cpu_us_per_call"]; ok && srv > 0 {
				text += fmt.Sprintf("; instance CPU %.1f vs %.1f µs/call", srv, r.Metrics["direct_server_cpu_us_per_call"])
			}
			return text, r.Error == "" && ratio >= 0.99
		}},
	},
	{
		name: "slow", flags: [][]string{fast, fast, fast}, policies: true, run: runSlow,
		event:  "7 s all fast, then one instance replaced by one that answers in 20 ms, 7 s",
		figure: "p99 and throughput with the slow one, as a ratio of all-fast; the slow one's share of calls",
		target: target{text: "p99 <= 1.5x all-fast; throughput >= 0.95 of all-fast", check: func(r result) (string, bool) {
			p, tp := r.Metrics["p99_ratio"], r.Metrics["throughput_ratio"]
			return fmt.Sprintf("p99 %.2fx, throughput %.2f, slow share %.1f%%, %d failed", p, tp, 100*r.Metrics["slow_share"], r.Failed),
				r.Error == "" && p <= 1.5 && tp >= 0.95
		}},
	},
	{
		name: "hang", flags: [][]string{fast, fast, fast}, policies: true, countsAttempts: true, run: runHang,
		event: "SIGSTOP of one instance for 8 s, then SIGCONT",
		figure: "failed calls; throughput during the stop / before; attempts sent to it from 1 s after the stop until SIGCONT; " +
			"time from SIGCONT to the first call it serves",
		target: target{text: "0 failed; throughput >= 0.9; no pick 1 s after the stop; back within 5 s", check: func(r result) (string, bool) {
			tp, picks, back := r.Metrics["throughput_during_stop_ratio"], r.Metrics["picks_after_1s"], r.Metrics["back_after_ms"]
			return fmt.Sprintf("%d failed; throughput %.2f; %.0f picks; back in %.0f ms", r.Failed, tp, picks, back),
				r.Error == "" && r.Failed == 0 && tp >= 0.9 && picks == 0 && back >= 0 && back <= 5000
		}},
	},
	{
		name: "weights", flags: [][]string{weight(1), weight(1), weight(3)}, policies: true, run: runWeights,
		event:  "instances registered with weights 1, 1, 3",
		figure: "share of calls of each",
		target: target{text: "shares 20/20/60 % within 2 points", check: func(r result) (string, bool) {
			w := r.Metrics["worst_share_error_points"]
			return fmt.Sprintf("%.0f/%.0f/%.0f %%", 100*r.Metrics["share_g1"], 100*r.Metrics["share_g2"], 100*r.Metrics["share_g3"]),
				r.Error == "" && w <= 2
		}},
	},
	{
		name: "deadline-600ms", flags: allAnswerIn("600ms"), run: runServerCalls,
		event:  "no event; every instance answers in 60 % (90 %) of the calls' 1 s deadline",
		figure: "failed calls; calls the servers started (their metrics) per call the client began",
		target: serverCalls,
	},
	{
		name: "deadline-900ms", flags: allAnswerIn("900ms"), run: runServerCalls,
		describedWith: "deadline-600ms",
		target:        serverCalls,
	},
	{
		name: "outage", run: runOutage,
		event:  "every instance answers UNAVAILABLE for 5 s (SIGUSR1, then SIGUSR2)",
		figure: "calls the servers started per call the client began during the outage; failed calls after it",
		target: target{text: "<= 1.1 server calls/call during; 0 failed after", check: func(r result) (string, bool) {
			s := r.Metrics["server_calls_per_call_during"]
			return fmt.Sprintf("%.3f server calls/call during (%.0f calls); %d failed / %d after", s, r.Metrics["calls_during"], r.Failed, r.Calls),
				r.Error == "" && s <= 1.1 && r.Failed == 0
		}},
	},
	{
		name: "errors", flags: [][]string{notFound(fast), notFound(fast), notFound(slow)}, policies: true, run: runErrors,
		event: "as slow, and every instance answers NOT_FOUND to 30 % of calls",
		figure: "the slow one's share of the calls answered OK; retries the client made (retries follow only UNAVAILABLE or a stall, " +
			"so any would be a NOT_FOUND retried); hedges",
		target: target{text: "slow share <= 2 %; no NOT_FOUND retried", check: func(r result) (string, bool) {
			share, retried := r.Metrics["slow_share"], r.Metrics["not_found_retried"]
			return fmt.Sprintf("slow share %.1f%%; %.0f NOT_FOUND retried; %.0f hedges; %s", 100*share, retried, r.Metrics["hedges"], fmt.Sprint(r.Codes)),
				r.Error == "" && share <= 0.02 && retried == 0
		}},
	},
	{
		name: "zone", flags: inZones("a", "a", "a", "b", "b", "b"), clientZone: "a", run: runZone,
		event:  "3 instances in zone a, 3 in zone b (`-zone`), the client in zone a (rollcall: `call.WithZone`)",
		figure: "share of the calls answered in zone a",
		target: target{text: ">= 99 % of calls to zone a", check: func(r result) (string, bool) {
			share := r.Metrics["local_share"]
			return fmt.Sprintf("%.1f %% in zone a; %d failed", 100*share, r.Failed), r.Error == "" && share >= 0.99
		}},
	},
	{
		name: "zone-short", flags: inZones("a", "b", "b", "b", "b", "b"), clientZone: "a", run: runZone,
		event: "1 instance in zone a, 5 in zone b, the client in zone a",
		figure: "share of the calls answered by zone a's instance, beside its fair share: with the service's callers spread " +
			"evenly over the two zones, each instance should take 1/6 of all their calls, so zone a's callers send it " +
			"(1/6)/(1/2) = 1/3 of theirs (Envoy's zone-aware rule)",
		target: target{text: "zone a's instance <= 1.2x its fair share, not all calls", check: func(r result) (string, bool) {
			share, fair := r.Metrics["local_share"], r.Metrics["fair_share"]
			return fmt.Sprintf("%.1f %% to zone a's instance (fair %.1f %%); %d failed", 100*share, 100*fair, r.Failed),
				r.Error == "" && share <= 1.2*fair && share < 1
		}},
	},
	{
		name: "zone-down", flags: inZones("a", "a", "a", "b", "b", "b"), clientZone: "a", countsAttempts: true, run: runZoneDown,
		event:  "as zone, then every zone a instance `kill -9` at once under load",
		figure: "failed calls; time from the kill to the first call answered in zone b",
		target: target{text: "0 failed idempotent calls; calls in b within 1 s", check: func(r result) (string, bool) {
			f, ok := failedCalls(r)
			b := r.Metrics["zone_b_after_ms"]
			a, _ := attempts(r, 2)
			return fmt.Sprintf("%s; first in b %.0f ms after the kill; %s", f, b, a), ok && b >= 0 && b <= 1000
		}},
	},
	{
		name: "bad-deploy", flags: [][]string{fast, fast}, countsAttempts: true, run: runBadDeploy,
		event: "2 instances, then a third joins that answers INTERNAL to every call (`-fail-rate 1 -fail-code INTERNAL`); " +
			"INTERNAL is never retried, and an answer that comes at once is never hedged, so each call it fails is one " +
			"attempt, as for a method that is not idempotent",
		figure: "time from the first failed call to the last; failed calls out of all; ejections; attempts per call",
		target: target{text: "failures stop within 1 s of the first; < 1 % of calls fail", check: func(r result) (string, bool) {
			span, share := r.Metrics["failing_ms"], float64(r.Failed)/float64(max(r.Calls, 1))
			a, _ := attempts(r, 2)
			return fmt.Sprintf("failing for %.0f ms; %d failed / %d (%.2f %%); %.0f ejected; %s", span, r.Failed, r.Calls, 100*share,
				r.Metrics["ejections"], a), r.Error == "" && r.Failed > 0 && span <= 1000 && share < 0.01
		}},
	},
	{
		name: "panic", flags: [][]string{fast, internal(fast), internal(fast)}, run: runPanic,
		event:  "3 instances, 2 of them answering INTERNAL to every call",
		figure: "panic mode (times entered, on at the end); each instance's share of the calls the servers started",
		target: target{text: "panic mode entered; calls spread, no instance with over half", check: func(r result) (string, bool) {
			panics, top := r.Metrics["panics"], r.Metrics["max_share"]
			return fmt.Sprintf("panic entered %.0f times (on at the end: %.0f); shares %.0f/%.0f/%.0f %%", panics, r.Metrics["panic_at_end"],
				100*r.Metrics["share_g1"], 100*r.Metrics["share_g2"], 100*r.Metrics["share_g3"]), r.Error == "" && panics >= 1 && top <= 0.5
		}},
	},
	{
		name: "slow-start", flags: [][]string{fast, fast, fast}, run: runSlowStart,
		event: "3 instances, then a 4th joins whose first 200 calls take 10x longer (`-warmup-calls 200`)",
		figure: "p99 of the calls started in the 5 s after its key appeared in etcd, as a ratio of the 5 s before it started; " +
			"its share of the calls started 9-10 s after (the end of the 10 s slow-start window), beside its fair 25 %",
		target: target{text: "p99 <= 1.5x before; the new one at >= 90 % of its fair share by the window's end", check: func(r result) (string, bool) {
			ratio, share := r.Metrics["p99_ratio"], r.Metrics["new_share_at_end"]
			return fmt.Sprintf("p99 %.1f ms vs %.1f ms before (%.2fx); %.0f calls to it in the first 5 s; its share at the end %.1f %%",
					r.Metrics["p99_after_ms"], r.Metrics["p99_before_ms"], ratio, r.Metrics["new_calls_first_5s"], 100*share),
				r.Error == "" && ratio <= 1.5 && share >= 0.9*0.25
		}},
	},
	{
		name: "herd", runAlone: runHerd,
		event: "200 registrations and 50 resolvers (each with its own etcd client, in 4 processes) cut off from etcd by " +
			"a TCP proxy for 15 s, longer than the 10 s lease TTL, while etcd stays up: every key expires",
		figure: "time from the proxy letting them back to every key written again; peak requests etcd served in a second " +
			"in the 5 s after (its `grpc_server_msg_received_total`, sampled every 100 ms), and in steady state before. rollcall only",
		target: target{text: "every key written again <= 2 s after etcd returns", check: func(r result) (string, bool) {
			ms := r.Metrics["reregister_ms"]
			return fmt.Sprintf("%.0f registrations, %.0f resolvers: written again in %.0f ms; peak %.0f requests/s after the return (steady %.0f/s)",
					r.Metrics["registrations"], r.Metrics["resolvers"], ms, r.Metrics["peak_requests_per_second"], r.Metrics["steady_requests_per_second"]),
				r.Error == "" && ms >= 0 && ms <= 2000
		}},
	},
}

func init() { scenarios = slices.Concat(scenarios, xdsScenarios, modelsScenarios) }

// find returns the scenario called name.
func find(name string) (scenario, bool) {
	for _, s := range scenarios {
		if s.name == name {
			return s, true
		}
	}
	return scenario{}, false
}

func failedCalls(r result) (string, bool) {
	return fmt.Sprintf("%d failed / %d", r.Failed, r.Calls), r.Failed == 0 && r.Error == ""
}

// attempts shows the attempts sent per call, and whether they are within
// limit.
func attempts(r result, limit float64) (string, bool) {
	a := r.Metrics["attempts_per_call"]
	return fmt.Sprintf("%.3f attempts/call", a), a <= limit
}

// lossless is the target of an instance stopped under load.
var lossless = target{text: "0 failed calls; <= 1.05 attempts/call", check: func(r result) (string, bool) {
	f, ok := failedCalls(r)
	a, aok := attempts(r, 1.05)
	return f + "; " + a, ok && aok
}}

// serverCalls is the target of calls near their deadline: the failed
// calls and the server calls per client call.
var serverCalls = target{text: "0 failed; <= 1.1 server calls/call", check: func(r result) (string, bool) {
	f, ok := failedCalls(r)
	s := r.Metrics["server_calls_per_call"]
	return fmt.Sprintf("%s; %.3f server calls/call", f, s), ok && s <= 1.1
}}

// reregistered is the target of etcd coming back.
var reregistered = target{text: "0 failed; re-registered <= 2 s, and still a TTL later", check: func(r result) (string, bool) {
	f, ok := failedCalls(r)
	ms, kept := r.Metrics["reregister_ms"], r.Metrics["registered_after_ttl"]
	if ms < 0 {
		return fmt.Sprintf("%s; never re-registered; %.0f of 3 registered a TTL later", f, kept), false
	}
	return fmt.Sprintf("%s; re-registered in %.0f ms; %.0f of 3 registered a TTL later", f, ms, kept), ok && ms <= 2000 && kept == 3
}}

// stopOne stops instance g2 with sig under load.
func stopOne(sig syscall.Signal) func(ctx context.Context, e *env, t timing, r *result) error {
	return func(ctx context.Context, e *env, t timing, r *result) error {
		return underLoad(e, t, r, func() error { e.stopGreeter("g2", sig); return nil })
	}
}

// etcdOutage kills etcd under load and brings it back on the same data,
// or wiped.
func etcdOutage(wipe bool) func(ctx context.Context, e *env, t timing, r *result) error {
	return func(ctx context.Context, e *env, t timing, r *result) error {
		return runEtcdOutage(ctx, e, t, r, wipe)
	}
}

// allAnswerIn is three instances answering after d, a large share of the
// load's 1 s deadline.
func allAnswerIn(d string) [][]string {
	answer := []string{"-latency", d}
	return [][]string{answer, answer, answer}
}

// slow is a balancing scenario's slow instance: ten times fast.
var slow = []string{"-latency", "20ms"}

// notFound answers NOT_FOUND to 30 % of calls, an application's error.
func notFound(base []string) []string {
	return append(base[:len(base):len(base)], "-fail-rate", "0.3", "-fail-code", "NOT_FOUND")
}

// runServerCalls runs the load with no event and counts the calls the
// servers saw per call the client made.
func runServerCalls(ctx context.Context, e *env, t timing, r *result) error {
	before, err := e.served("started")
	if err != nil {
		return err
	}
	l := startLoad(e.client, 32, time.Second)
	time.Sleep(t.warm + t.after)
	r.fill(l.rec, l.stop())
	after, err := e.served("started")
	if err != nil {
		return err
	}
	// Per call begun: the calls cut when the load stopped reached the
	// servers too.
	r.metric("server_calls_per_call", float64(after-before)/float64(max(l.started.Load(), 1)))
	return nil
}

// runOutage makes every instance answer UNAVAILABLE for 5 s (SIGUSR1,
// then SIGUSR2) under load: the calls the servers saw per client call
// during the outage, and the calls that failed after it.
func runOutage(ctx context.Context, e *env, t timing, r *result) error {
	l := startLoad(e.client, 32, time.Second)
	time.Sleep(t.warm)
	// drill sends sig to every instance and reads the calls begun and the
	// calls the servers started, at that moment.
	drill := func(sig syscall.Signal) (calls int64, served int, err error) {
		calls = l.started.Load()
		served, err = e.served("started")
		for _, id := range e.order {
			e.greeters[id].Signal(sig)
		}
		return calls, served, err
	}
	calls0, served0, err := drill(syscall.SIGUSR1)
	if err != nil {
		return err
	}
	time.Sleep(5 * time.Second)
	calls1, served1, err := drill(syscall.SIGUSR2)
	if err != nil {
		return err
	}
	time.Sleep(100 * time.Millisecond) // calls answered as the drill ended
	l.stop()
	after := startLoad(e.client, 32, time.Second)
	time.Sleep(t.after)
	r.fill(after.rec, after.stop())
	r.metric("server_calls_per_call_during", float64(served1-served0)/float64(max(calls1-calls0, 1)))
	r.metric("calls_during", float64(calls1-calls0))
	return nil
}

// runErrors runs the load over two fast instances and one ten times
// slower, all answering NOT_FOUND to 30 % of calls: the slow one's share,
// and the extra attempts rollcall's client made, by kind (retries follow
// only UNAVAILABLE or a stall, so any retry here would be a NOT_FOUND
// retried).
func runErrors(ctx context.Context, e *env, t timing, r *result) error {
	x0 := e.obs.extraAttempts()
	l := startLoad(e.client, 32, time.Second)
	time.Sleep(t.warm + t.after)
	r.fill(l.rec, l.stop())
	x1 := e.obs.extraAttempts()
	got := l.rec.snapshot()
	r.metric("slow_share", float64(got.byID["g3"])/float64(max(r.Calls-got.codes["NotFound"], 1)))
	r.metric("not_found_retried", float64(x1[call.KindRetry]-x0[call.KindRetry]))
	r.metric("hedges", float64(x1[call.KindHedge]-x0[call.KindHedge]))
	return nil
}

// runSlow measures all-fast, then replaces one instance by one ten times
// slower, and compares p99 and throughput.
func runSlow(ctx context.Context, e *env, t timing, r *result) error {
	measure := func() (p99 time.Duration, rate float64) {
		l := startLoad(e.client, 32, time.Second)
		time.Sleep(t.warm + t.after)
		elapsed := l.stop()
		got := l.rec.snapshot()
		return got.p99, float64(got.calls) / elapsed.Seconds()
	}
	fastP99, fastRate := measure()
	id, err := e.startGreeter("-latency", "20ms")
	if err != nil {
		return err
	}
	e.stopGreeter("g3", syscall.SIGTERM)
	if _, err := e.obs.awaitCount(3, 30*time.Second); err != nil {
		return err
	}
	if err := e.awaitServed(id); err != nil {
		return err
	}
	l := startLoad(e.client, 32, time.Second)
	time.Sleep(t.warm + t.after)
	r.fill(l.rec, l.stop())
	got := l.rec.snapshot()
	r.metric("p99_ratio", float64(got.p99)/float64(fastP99))
	r.metric("throughput_ratio", r.CallsPerSec/fastRate)
	r.metric("slow_share", float64(got.byID[id])/float64(max(r.Calls, 1)))
	return nil
}

// runHang stops one instance (SIGSTOP) for 8 s under load, then resumes it.
func runHang(ctx context.Context, e *env, t timing, r *result) error {
	addr, err := e.addrOf(ctx, "g2")
	if err != nil {
		return err
	}
	l := startLoad(e.client, 32, time.Second)
	time.Sleep(t.warm)
	beforeCalls := l.rec.snapshot().calls
	beforeStart := time.Now()
	time.Sleep(2 * time.Second)
	midCalls := l.rec.snapshot().calls
	before := float64(midCalls-beforeCalls) / time.Since(beforeStart).Seconds()

	p := e.greeters["g2"]
	e.obs.watchTries(addr)
	stopped := time.Now()
	p.Signal(syscall.SIGSTOP)
	hangFor := 8 * time.Second
	if t == smoke {
		hangFor = 3 * time.Second
	}
	time.Sleep(hangFor)
	duringCalls := l.rec.snapshot().calls
	during := float64(duringCalls-midCalls) / time.Since(stopped).Seconds()
	resumed := time.Now()
	p.Signal(syscall.SIGCONT)
	back := l.rec.firstCallAfter("g2", resumed)
	var backAfter time.Duration = -1
	select {
	case at := <-back:
		backAfter = at.Sub(resumed)
	case <-time.After(10 * time.Second):
	}
	r.fill(l.rec, l.stop())
	picksLate := 0
	for _, at := range e.obs.triesTo() {
		if at.After(stopped.Add(time.Second)) && at.Before(resumed) {
			picksLate++
		}
	}
	r.metric("throughput_during_stop_ratio", during/before)
	r.metric("picks_after_1s", float64(picksLate))
	r.metric("back_after_ms", ms(backAfter))
	return nil
}

// runWeights runs instances registered with weights 1, 1 and 3.
func runWeights(ctx context.Context, e *env, t timing, r *result) error {
	l := startLoad(e.client, 32, time.Second)
	time.Sleep(t.warm + t.after)
	r.fill(l.rec, l.stop())
	byID := l.rec.snapshot().byID
	worst := 0.0
	for id, want := range map[string]float64{"g1": 0.2, "g2": 0.2, "g3": 0.6} {
		share := float64(byID[id]) / float64(max(r.Calls, 1))
		r.metric("share_"+id, share)
		worst = max(worst, math.Abs(share-want))
	}
	r.metric("worst_share_error_points", 100*worst)
	return nil
}

// underLoad runs 32 workers with a 1 s deadline, applies event after the
// warm-up, runs on, and records the calls.
func underLoad(e *env, t timing, r *result, event func() error) error {
	l := startLoad(e.client, 32, time.Second)
	time.Sleep(t.warm)
	err := event()
	time.Sleep(t.after)
	elapsed := l.stop()
	r.fill(l.rec, elapsed)
	return err
}

func (r *result) fill(rec *recorder, elapsed time.Duration) {
	got := rec.snapshot()
	r.Calls, r.Failed, r.Codes = got.calls, got.failed, got.codes
	r.CallsPerSec = float64(got.calls) / elapsed.Seconds()
	r.P99Ms = float64(got.p99.Microseconds()) / 1000
}

func (r *result) metric(name string, v float64) {
	if r.Metrics == nil {
		r.Metrics = map[string]float64{}
	}
	r.Metrics[name] = v
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// runRolling replaces every instance in turn: start the new one, wait for
// its key, SIGTERM the old.
func runRolling(ctx context.Context, e *env, t timing, r *result) error {
	var fresh []string
	l := startLoad(e.client, 32, time.Second)
	time.Sleep(t.warm)
	err := func() error {
		for _, old := range []string{"g1", "g2", "g3"} {
			id, err := e.startGreeter()
			if err != nil {
				return err
			}
			fresh = append(fresh, id)
			if _, err := e.awaitKeys(ctx, []string{id}, 30*time.Second); err != nil {
				return err
			}
			e.stopGreeter(old, syscall.SIGTERM)
		}
		return nil
	}()
	time.Sleep(t.after)
	r.fill(l.rec, l.stop())
	byID := l.rec.snapshot().byID
	served := 0
	for _, id := range fresh {
		if byID[id] > 0 {
			served++
		}
	}
	r.metric("new_instances_served", float64(served))
	return err
}

// runScaleUp starts a fourth instance again and again, measuring from its
// key appearing in etcd to the first call it serves.
func runScaleUp(ctx context.Context, e *env, t timing, r *result) error {
	l := startLoad(e.client, 32, time.Second)
	defer func() { r.fill(l.rec, l.stop()) }()
	time.Sleep(t.warm)
	var delays []time.Duration
	for range t.scaleEvents {
		wctx, cancel := context.WithCancel(ctx)
		events := e.cli.Watch(wctx, e.st.prefix("greeter"), clientv3.WithPrefix())
		id, err := e.startGreeter()
		if err != nil {
			cancel()
			return err
		}
		first := l.rec.firstCall(id)
		var keyAt time.Time
		for resp := range events {
			for _, ev := range resp.Events {
				if ev.Type == clientv3.EventTypePut && string(ev.Kv.Key) == e.key(id) {
					keyAt = time.Now()
				}
			}
			if !keyAt.IsZero() {
				break
			}
		}
		cancel()
		select {
		case at := <-first:
			delays = append(delays, max(at.Sub(keyAt), 0))
		case <-time.After(10 * time.Second):
			return fmt.Errorf("instance %s served no call in 10s", id)
		}
		e.stopGreeter(id, syscall.SIGTERM)
	}
	slices.Sort(delays)
	r.metric("first_call_p50_ms", ms(delays[len(delays)/2]))
	r.metric("first_call_p99_ms", ms(delays[(len(delays)*99)/100]))
	return nil
}

// runEtcdOutage kills etcd (kill -9) for a while, then brings it back on
// the same data, or wiped.
func runEtcdOutage(ctx context.Context, e *env, t timing, r *result, wipe bool) error {
	ids := append([]string(nil), e.order...)
	var back time.Time
	err := underLoad(e, t, r, func() error {
		m := e.etcd.Members()[0]
		m.Process().Stop(syscall.SIGKILL, 20*time.Second)
		if wipe {
			if err := os.RemoveAll(m.DataDir); err != nil {
				return err
			}
		} else {
			time.Sleep(t.etcdDown)
		}
		if err := e.etcd.Restart(ctx, m); err != nil {
			return err
		}
		back = time.Now()
		at, err := e.awaitKeys(ctx, ids, 15*time.Second)
		if err != nil {
			r.metric("reregister_ms", -1) // never, within 15 s
			return nil
		}
		r.metric("reregister_ms", ms(at.Sub(back)))
		return nil
	})
	if err != nil || back.IsZero() {
		return err
	}
	// A registration that came back must also stay: wait out one lease TTL
	// (10 s) past etcd's return, then count the keys.
	time.Sleep(time.Until(back.Add(12 * time.Second)))
	resp, err := e.cli.Get(ctx, e.st.prefix("greeter"), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return err
	}
	r.metric("registered_after_ttl", float64(resp.Count))
	return nil
}

// runLeader kills the leader of a three-member etcd cluster.
func runLeader(ctx context.Context, e *env, t timing, r *result) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	deletes := make(chan int, 1)
	events := e.cli.Watch(wctx, e.st.prefix("greeter"), clientv3.WithPrefix())
	go func() {
		n := 0
		for resp := range events {
			for _, ev := range resp.Events {
				if ev.Type == clientv3.EventTypeDelete {
					n++
				}
			}
		}
		deletes <- n
	}()
	err := underLoad(e, t, r, func() error {
		lctx, lcancel := context.WithTimeout(ctx, 5*time.Second)
		defer lcancel()
		leader, err := e.etcd.Leader(lctx, e.cli)
		if err != nil {
			return err
		}
		leader.Process().Stop(syscall.SIGKILL, 20*time.Second)
		return nil
	})
	cancel()
	r.metric("registrations_lost", float64(<-deletes))
	return err
}

// runChurn makes 1,000 registrations of one service appear and vanish in
// bursts, measuring when the client's list equals etcd's, and the client
// process's CPU and heap.
func runChurn(ctx context.Context, e *env, t timing, r *result) error {
	obs := newObserver()
	conn, err := e.st.dial(e.cli, "churn", obs, "")
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.Connect()
	if _, err := obs.awaitCount(0, 10*time.Second); err != nil && e.st.name == "rollcall" {
		return err
	}
	const n = 1000
	value := func(i int) string {
		v, _ := json.Marshal(map[string]any{"Op": 0, "Addr": fmt.Sprintf("127.0.0.1:%d", 20000+i)})
		return string(v)
	}
	cpu0 := cpuTime()
	var worst time.Duration
	for range t.bursts {
		for start := 0; start < n; start += 100 {
			var ops []clientv3.Op
			for i := start; i < start+100; i++ {
				ops = append(ops, clientv3.OpPut(fmt.Sprintf("%sc%04d", e.st.prefix("churn"), i), value(i)))
			}
			if _, err := e.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
				return err
			}
		}
		done := time.Now()
		at, err := obs.awaitCount(n, 30*time.Second)
		if err != nil {
			return err
		}
		worst = max(worst, at.Sub(done))
		if _, err := e.cli.Delete(ctx, e.st.prefix("churn"), clientv3.WithPrefix()); err != nil {
			return err
		}
		done = time.Now()
		if at, err = obs.awaitCount(0, 30*time.Second); err != nil {
			return err
		}
		worst = max(worst, at.Sub(done))
	}
	r.metric("converge_max_ms", ms(worst))
	r.metric("client_cpu_ms", ms(cpuTime()-cpu0))
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	r.metric("heap_inuse_mb", float64(m.HeapInuse)/(1<<20))
	return nil
}

// runThroughput compares calls per second through discovery and balancing
// with calls over one direct connection, to the same single instance, so
// the ratio is the cost of discovery, health checks, retries and
// balancing alone.
//
// It runs many short pairs of rounds, one each way, in alternating order,
// and reports the mean of the pairs' ratios less the tenth highest and
// lowest, so drift in the machine's speed cancels out, and the middle
// half of the ratios, which shows how far one pair is from the next on
// this machine. Workers record calls
// each into a recorder of its own (merged after the round), so that
// recording costs both ways the same and nothing queues on it.
func runThroughput(ctx context.Context, e *env, t timing, r *result) error {
	addr, err := e.addrOf(ctx, "g1")
	if err != nil {
		return err
	}
	direct, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer direct.Close()
	clients := [2]greeterv1.GreeterServiceClient{e.client, greeterv1.NewGreeterServiceClient(direct)}
	viaDiscovery := newRecorder()
	server := e.greeters["g1"].PID()
	var elapsed, cpu, serverCPU [2]time.Duration
	var calls [2]int
	var ratios []float64
	round := func(way int) float64 {
		cpu0, server0 := cpuTime(), processCPU(server)
		var l *load
		pprof.Do(ctx, pprof.Labels("way", [2]string{"discovery", "direct"}[way]), func(context.Context) {
			l = startLoadPerWorker(clients[way], 32, time.Second)
		})
		time.Sleep(t.throughput / throughputPairs)
		took := l.stop()
		cpu[way] += cpuTime() - cpu0
		serverCPU[way] += processCPU(server) - server0
		elapsed[way] += took
		n := l.rec.snapshot().calls
		calls[way] += n
		if way == 0 {
			viaDiscovery.add(l.rec)
		}
		return float64(n) / took.Seconds()
	}
	for pair := range throughputPairs {
		var rate [2]float64
		for i := range 2 {
			way := (pair + i) % 2
			rate[way] = round(way)
		}
		ratios = append(ratios, rate[0]/rate[1])
	}
	r.fill(viaDiscovery, elapsed[0])
	slices.Sort(ratios)
	r.metric("direct_calls_per_second", float64(calls[1])/elapsed[1].Seconds())
	trim := len(ratios) / 10
	r.metric("ratio", mean(ratios[trim:len(ratios)-trim]))
	r.metric("ratio_q1", ratios[len(ratios)/4])
	r.metric("ratio_q3", ratios[len(ratios)*3/4])
	// The client's CPU per call each way: the part of the cost that is the
	// client's alone.
	r.metric("client_cpu_us_per_call", float64(cpu[0].Microseconds())/float64(calls[0]))
	r.metric("direct_client_cpu_us_per_call", float64(cpu[1].Microseconds())/float64(calls[1]))
	r.metric("server_cpu_us_per_call", float64(serverCPU[0].Microseconds())/float64(calls[0]))
	r.metric("direct_server_cpu_us_per_call", float64(serverCPU[1].Microseconds())/float64(calls[1]))
	return nil
}

// throughputPairs is how many pairs of rounds the throughput scenario
// runs: many short pairs are steadier than few long ones on a machine
// whose speed drifts. Pairs differ by about 4 % here (one standard
// deviation); the mean of 135 less a tenth at each end is then within
// about 0.4 % of the ratio's true value, a run's median of 45 was within
// about 0.8 %.
const throughputPairs = 135

func mean(xs []float64) float64 {
	sum := 0.0
	for _, x := range xs {
		sum += x
	}
	return sum / float64(len(xs))
}

// processCPU is the CPU time the process pid has used (user and system),
// from /proc, in clock ticks of 10 ms; 0 where it cannot be read.
func processCPU(pid int) time.Duration {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name, in parentheses, may hold spaces: fields count
	// from the last ')'. utime and stime are fields 14 and 15.
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(fields) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
