package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/magefile/mage/mg"
)

// Aliases lets `mage bench` run every scenario.
var Aliases = map[string]any{"bench": Bench.All}

// Bench measures discovery under failure and scale, rollcall beside etcd's naming package.
type Bench mg.Namespace

// All runs every scenario for rollcall and the baseline and writes the table to docs/benchmarks.md.
func (Bench) All() error {
	var out, gobench bytes.Buffer
	err := runScenarios(io.MultiWriter(os.Stdout, &out))
	for _, gb := range goBenches {
		fmt.Fprintf(&gobench, "$ cd %s && go %s\n", gb.dir, strings.Join(gb.args, " "))
		c := cmdIn(gb.dir, "go", gb.args...)
		c.Stdout = io.MultiWriter(os.Stdout, &gobench)
		if berr := c.Run(); berr != nil && err == nil {
			err = berr
		}
	}
	if werr := writeBenchDoc(out.String(), gobench.String()); werr != nil {
		return werr
	}
	return err
}

// goBenches are the Go benchmarks of the hot paths: the resolver's update
// at 10 to 10,000 instances, each picker, and a call through discovery and
// balancing against a direct one (health checks, and the greeter's
// idempotent SayHello with its retries and attempt timeouts). Compare runs
// with benchstat.
var goBenches = []struct {
	dir  string
	args []string
}{
	{"pkg", []string{"test", "-run", "^$", "-bench", ".", "-benchtime", "2s", "./discovery/resolve/", "./balance/", "./call/"}},
	{"bench", []string{"test", "-run", "^$", "-bench", ".", "-benchtime", "2s", "./callcost/"}},
}

// Kill runs the kill -9 scenario for both stacks.
func (Bench) Kill() error { return runScenarios(os.Stdout, "-run", "kill") }

// Term runs the SIGTERM scenario for both stacks.
func (Bench) Term() error { return runScenarios(os.Stdout, "-run", "term") }

// Rolling runs the rolling-replacement scenario for both stacks.
func (Bench) Rolling() error { return runScenarios(os.Stdout, "-run", "rolling") }

// ScaleUp runs the scale-up scenario for both stacks.
func (Bench) ScaleUp() error { return runScenarios(os.Stdout, "-run", "scale-up") }

// EtcdDown runs the etcd-down scenario for both stacks.
func (Bench) EtcdDown() error { return runScenarios(os.Stdout, "-run", "etcd-down") }

// EtcdWiped runs the etcd-wiped scenario for both stacks.
func (Bench) EtcdWiped() error { return runScenarios(os.Stdout, "-run", "etcd-wiped") }

// EtcdLeader runs the etcd-leader scenario (three-member etcd) for both stacks.
func (Bench) EtcdLeader() error { return runScenarios(os.Stdout, "-run", "etcd-leader") }

// Churn runs the 1,000-registration churn scenario for both stacks.
func (Bench) Churn() error { return runScenarios(os.Stdout, "-run", "churn") }

// Throughput runs the throughput scenario (discovery and balancing vs one direct connection) for both stacks.
func (Bench) Throughput() error { return runScenarios(os.Stdout, "-run", "throughput") }

// Slow runs the slow-instance scenario for each balancing policy.
func (Bench) Slow() error { return runScenarios(os.Stdout, "-run", "slow") }

// Hang runs the SIGSTOP scenario for each balancing policy.
func (Bench) Hang() error { return runScenarios(os.Stdout, "-run", "hang") }

// Weights runs the weights 1, 1, 3 scenario for each balancing policy.
func (Bench) Weights() error { return runScenarios(os.Stdout, "-run", "weights") }

// Herd cuts 200 registrations and 50 resolvers off etcd for 15 s and measures etcd's load when they come back.
func (Bench) Herd() error { return runScenarios(os.Stdout, "-run", "herd") }

// Smoke runs kill, term, rolling and herd briefly, failing on any call rollcall loses (part of test).
func (Bench) Smoke() error {
	return runScenarios(os.Stdout, "-smoke", "-run", "kill,term,rolling,herd", "-stacks", "rollcall")
}

// runScenarios builds what the scenario program starts and runs it.
func runScenarios(out io.Writer, args ...string) error {
	if err := buildBinaries(); err != nil {
		return err
	}
	abs, err := filepath.Abs("bin")
	if err != nil {
		return err
	}
	for _, cmd := range []string{"baseline-greeter", "scenarios"} {
		if err := runIn("bench", nil, "go", "build", "-o", filepath.Join(abs, cmd), "./cmd/"+cmd); err != nil {
			return err
		}
	}
	c := cmdIn(".", filepath.Join("bin", "scenarios"), args...)
	c.Stdout, c.Stderr = out, os.Stderr
	return c.Run()
}

// writeBenchDoc writes docs/benchmarks.md from one run's output: never
// typed by hand.
func writeBenchDoc(output, gobench string) error {
	table := output
	if i := strings.Index(output, "\n| scenario"); i >= 0 {
		table = output[i+1:]
	}
	cpu, _ := os.ReadFile("/proc/cpuinfo")
	model := "unknown CPU"
	for line := range strings.SplitSeq(string(cpu), "\n") {
		if name, ok := strings.CutPrefix(line, "model name\t: "); ok {
			model = name
			break
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Benchmarks\n\nWritten by `go run mage.go bench` on %s: %d cores (%s), %s. Do not edit by hand; run it again.\n\n",
		time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), model, runtime.Version())
	b.WriteString(benchPreamble)
	b.WriteString("\n## Results\n\n")
	b.WriteString(table)
	b.WriteString("\n## Every run, as JSON lines\n\n```\n")
	for line := range strings.SplitSeq(output, "\n") {
		if strings.HasPrefix(line, "{") {
			b.WriteString(line + "\n")
		}
	}
	b.WriteString("```\n")
	fmt.Fprintf(&b, "\n## Go benchmarks\n\nCompare runs with benchstat.\n\n```\n%s```\n", gobench)
	if err := os.MkdirAll("docs", 0o755); err != nil {
		return err
	}
	return os.WriteFile("docs/benchmarks.md", []byte(b.String()), 0o644)
}

const benchPreamble = `Every scenario starts a real etcd (built from the pinned Go module), three greeter processes and a
closed-loop load of 32 workers with a 1 s deadline per call, all on 127.0.0.1; applies one event; and counts
every call with its status code, latency and the instance that served it. Each runs twice in the same run:

- **rollcall**: the greeter (` + "`pkg/serve`" + `) and ` + "`call.Dial`" + ` with its defaults (policy ` + "`rollcall_p2c_ewma`" + `);
- **baseline**: built only from etcd's ` + "`client/v3/naming`" + ` packages: ` + "`endpoints.Manager`" + ` with a lease
  and ` + "`KeepAlive`" + `, etcd's resolver, ` + "`round_robin`" + `, and a careful shutdown (delete the endpoint, then
  ` + "`GracefulStop`" + `) - ` + "`bench/cmd/baseline-greeter`" + `.

What the figures mean:

| scenario | event | figure |
|---|---|---|
| kill | ` + "`kill -9`" + ` of one instance | failed calls out of all calls |
| term | SIGTERM of one instance | failed calls |
| rolling | each instance replaced in turn (new one up and registered, old one SIGTERM) | failed calls; new instances that served calls |
| scale-up | a fourth instance starts, 20 times | time from its key's PUT event in etcd to the first call it serves (p50, p99) |
| etcd-down | etcd ` + "`kill -9`" + `, back after 10 s on the same data | failed calls; time from etcd healthy again to every instance's key present under a lease; keys still there one lease TTL (10 s) later |
| etcd-wiped | etcd ` + "`kill -9`" + `, its data deleted, an empty etcd on the same ports | as etcd-down ("never": not within 15 s) |
| etcd-leader | three-member etcd, its leader ` + "`kill -9`" + ` | failed calls; DELETE events on the instances' keys |
| churn | 1,000 registrations put in 10 transactions, then deleted at once, 3 times | longest time from etcd's answer to the resolver's list having the same size; CPU of the client process; heap in use after |
| throughput | no event, one instance | calls per second through discovery and balancing vs over one direct connection to the same instance: the median ratio of 45 pairs of half-second rounds, one each way in alternating order, with the middle half of the pairs' ratios (how far one pair is from the next on this machine); the client's CPU per call each way |
| deadline-600ms, deadline-900ms | no event; every instance answers in 60 % (90 %) of the calls' 1 s deadline | failed calls; calls the servers started (their metrics) per call the client began |
| outage | every instance answers UNAVAILABLE for 5 s (SIGUSR1, then SIGUSR2) | calls the servers started per call the client began during the outage; failed calls after it |
| herd | 200 registrations and 50 resolvers (each with its own etcd client, in 4 processes) cut off from etcd by a TCP proxy for 15 s, longer than the 10 s lease TTL, while etcd stays up: every key expires | time from the proxy letting them back to every key written again; peak requests etcd served in a second in the 5 s after (its ` + "`grpc_server_msg_received_total`" + `, sampled every 100 ms), and in steady state before. rollcall only |

kill, term and rolling also show the attempts the client sent per call (a stats handler counts every attempt that
reached a connection, from any layer: retries, hedges, stall cuts).

The balancing scenarios run rollcall with each policy instead of the baseline; every instance answers after 2 ms
(` + "`-latency 2ms`" + `):

| scenario | event | figure |
|---|---|---|
| slow | 7 s all fast, then one instance replaced by one that answers in 20 ms, 7 s | p99 and throughput with the slow one, as a ratio of all-fast; the slow one's share of calls |
| hang | SIGSTOP of one instance for 8 s, then SIGCONT | failed calls; throughput during the stop / before; attempts sent to it from 1 s after the stop until SIGCONT; time from SIGCONT to the first call it serves |
| weights | instances registered with weights 1, 1, 3 | share of calls of each |
| errors | as slow, and every instance answers NOT_FOUND to 30 % of calls | the slow one's share of the calls answered OK; retries the client made (retries follow only UNAVAILABLE or a stall, so any would be a NOT_FOUND retried); hedges |
`
