package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
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
		if sc.policies != balancing || sc.describedWith != "" {
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
