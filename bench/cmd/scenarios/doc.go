package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// machine is where a run was made, as the doc's first line states it.
type machine struct {
	date      string // UTC, 2006-01-02
	cores     int
	cpu       string
	goVersion string
}

func thisMachine() machine {
	m := machine{date: time.Now().UTC().Format(time.DateOnly), cores: runtime.NumCPU(), cpu: "unknown CPU", goVersion: runtime.Version()}
	cpuinfo, _ := os.ReadFile("/proc/cpuinfo") // elsewhere the CPU stays unknown
	for line := range strings.SplitSeq(string(cpuinfo), "\n") {
		if name, ok := strings.CutPrefix(line, "model name\t: "); ok {
			m.cpu = name
			break
		}
	}
	return m
}

// writeDocFile writes the doc of one run to path.
func writeDocFile(path string, results []result, goBenchmarks string) error {
	var b bytes.Buffer
	if err := writeDoc(&b, thisMachine(), results, goBenchmarks); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// writeDoc writes docs/benchmarks.md: what every scenario does and
// reports, made from the scenario records, then one run's tables and
// JSON lines, and the Go benchmarks' output.
func writeDoc(w io.Writer, m machine, results []result, goBenchmarks string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# Benchmarks\n\nWritten by `go run mage.go bench` on %s: %d cores (%s), %s. Do not edit by hand; run it again.\n\n",
		m.date, m.cores, m.cpu, m.goVersion)
	b.WriteString(docIntro)
	describe(&b, false)
	var counting []string
	for _, sc := range scenarios {
		if sc.countsAttempts && !sc.policies {
			counting = append(counting, sc.name)
		}
	}
	fmt.Fprintf(&b, "\n%s also show the attempts the client sent per call (a stats handler counts every attempt that\n"+
		"reached a connection, from any layer: retries, hedges, stall cuts).\n\n", andList(counting))
	fmt.Fprintf(&b, "The balancing scenarios run rollcall with each policy instead of the baseline; every instance answers after 2 ms\n(`%s`):\n\n",
		strings.Join(fast, " "))
	describe(&b, true)

	var tables strings.Builder
	printTable(&tables, results)
	printBalanceTable(&tables, results)
	b.WriteString("\n## Results\n\n")
	b.WriteString(strings.TrimPrefix(tables.String(), "\n"))

	writeGroups(&b, results)

	b.WriteString("\n## Every run, as JSON lines\n\n```\n")
	lines := json.NewEncoder(&b)
	for _, r := range results {
		if err := lines.Encode(r); err != nil {
			return fmt.Errorf("result of %s/%s: %w", r.Scenario, r.Stack, err)
		}
	}
	b.WriteString("```\n")
	fmt.Fprintf(&b, "\n## Go benchmarks\n\nCompare runs with benchstat.\n\n```\n%s```\n", goBenchmarks)
	_, err := io.WriteString(w, b.String())
	return err
}

// docIntro is what every scenario has in common.
const docIntro = "Every scenario starts a real etcd (built from the pinned Go module), three greeter processes and a\n" +
	"closed-loop load of 32 workers with a 1 s deadline per call, all on 127.0.0.1; applies one event; and counts\n" +
	"every call with its status code, latency and the instance that served it. Each runs twice in the same run:\n\n" +
	"- **rollcall**: the greeter (`pkg/serve`) and `call.Dial` with its defaults (policy `rollcall_p2c_ewma`);\n" +
	"- **baseline**: built only from etcd's `client/v3/naming` packages: `endpoints.Manager` with a lease\n" +
	"  and `KeepAlive`, etcd's resolver, `round_robin`, and a careful shutdown (delete the endpoint, then\n" +
	"  `GracefulStop`) - `bench/cmd/baseline-greeter`.\n\n" +
	"What the figures mean:\n\n"

// describe writes the table of what the scenarios do and report: the
// balancing ones, or the others.
func describe(b *strings.Builder, balancing bool) {
	b.WriteString("| scenario | event | figure |\n|---|---|---|\n")
	for _, sc := range scenarios {
		if sc.policies != balancing || sc.describedWith != "" || sc.group != "" {
			continue
		}
		names := []string{sc.name}
		for _, other := range scenarios {
			if other.describedWith == sc.name {
				names = append(names, other.name)
			}
		}
		fmt.Fprintf(b, "| %s | %s | %s |\n", strings.Join(names, ", "), sc.event, sc.figure)
	}
}

// andList joins names as prose: "a, b and c".
func andList(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

// writeGroups writes a section for each group of scenarios the results
// hold: a run of some scenarios (mage bench:models) writes only theirs.
func writeGroups(b *strings.Builder, results []result) {
	has := func(group string) bool {
		return slices.ContainsFunc(results, func(r result) bool { sc, ok := find(r.Scenario); return ok && sc.group == group })
	}
	if has(groupXDS) {
		b.WriteString("\n## The lookaside model: xDS\n\nThe same greeters, a control plane (`services/xds`) that reads etcd with the " +
			"resolver's watch, and a Go client (`pkg/call/callxds`) that knows only the control plane: grpc-go's xDS resolver and " +
			"balancers, with the route's retry policy on UNAVAILABLE for idempotent methods.\n\n")
		describeGroup(b, groupXDS)
		printGroupTable(b, results, groupXDS, []string{"xds"})
	}
	if has(groupModels) {
		b.WriteString("\n## Three models side by side\n\nThe same load and events through: **rollcall** (`call.Dial`, balancing in the " +
			"client), **xds** (the control plane and grpc-go's xDS client) and **nginx** (Debian's package, which the run installs with apt when missing; `grpc_pass` to an " +
			"upstream that a watcher renders from etcd and reloads nginx with).\n\n")
		describeGroup(b, groupModels)
		printGroupTable(b, results, groupModels, modelStacks)
		writeChoice(b, results)
	}
}

func describeGroup(b *strings.Builder, group string) {
	b.WriteString("| scenario | event | figure |\n|---|---|---|\n")
	for _, sc := range scenarios {
		if sc.group == group {
			fmt.Fprintf(b, "| %s | %s | %s |\n", sc.name, sc.event, sc.figure)
		}
	}
}

// writeChoice writes which model to choose, citing this run's figures.
func writeChoice(b *strings.Builder, results []result) {
	get := func(scenario, stack string) (result, bool) {
		i := slices.IndexFunc(results, func(r result) bool { return r.Scenario == scenario && r.Stack == stack && r.Error == "" })
		if i < 0 {
			return result{}, false
		}
		return results[i], true
	}
	fig := func(stack string) string {
		var parts []string
		if r, ok := get("models-steady", stack); ok {
			parts = append(parts, fmt.Sprintf("%.0f calls/s, p99 %.2f ms, %.0f ms CPU per 1,000 calls", r.CallsPerSec, r.P99Ms, r.Metrics["cpu_ms_per_1000_calls"]))
		}
		for _, ev := range []string{"kill", "term"} {
			if r, ok := get("models-"+ev, stack); ok {
				parts = append(parts, fmt.Sprintf("%d failed on %s", r.Failed, ev))
			}
		}
		if r, ok := get("models-scale-up", stack); ok {
			parts = append(parts, fmt.Sprintf("a new instance's first call after %.0f ms (p50)", r.Metrics["first_call_p50_ms"]))
		}
		if len(parts) == 0 {
			return "not measured in this run"
		}
		return strings.Join(parts, "; ")
	}
	fmt.Fprintf(b, "\n### Which model to choose\n\n"+
		"- **Go services: rollcall's client** (%s). Nothing runs between client and instance, and its policies know "+
		"latency, stalls and health.\n"+
		"- **Other languages, or gRPC's own policies (outlier detection, ring hash, localities): xDS** (%s). The client "+
		"stays gRPC's own; the control plane runs beside etcd, and clients keep their endpoints while it is away.\n"+
		"- **Clients that cannot do either (no gRPC balancing, a browser, a fixed address): the proxy** (%s). Every call "+
		"crosses one more process, and a call on an instance that dies is lost: nginx retries only calls it has not sent.\n",
		fig("rollcall"), fig("xds"), fig("nginx"))
}
