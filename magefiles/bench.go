package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/magefile/mage/mg"
)

// Aliases lets `mage bench` run every scenario.
var Aliases = map[string]any{"bench": Bench.All}

// Bench measures discovery under failure and scale, rollcall beside etcd's naming package.
type Bench mg.Namespace

// All runs the Go benchmarks and every scenario for rollcall and the baseline, and writes docs/benchmarks.md.
func (Bench) All() error {
	gobench, err := os.CreateTemp("", "rollcall-gobench-")
	if err != nil {
		return err
	}
	defer os.Remove(gobench.Name())
	var benchErr error
	for _, gb := range goBenches {
		fmt.Fprintf(gobench, "$ cd %s && go %s\n", gb.dir, strings.Join(gb.args, " "))
		c := cmdIn(gb.dir, "go", gb.args...)
		c.Stdout = io.MultiWriter(os.Stdout, gobench)
		if err := c.Run(); err != nil && benchErr == nil {
			benchErr = err
		}
	}
	if err := gobench.Close(); err != nil {
		return err
	}
	// The doc is written even when rollcall misses a target.
	if err := runScenarios("-write", filepath.Join("docs", "benchmarks.md"), "-gobench", gobench.Name()); err != nil {
		return err
	}
	return benchErr
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

// Run runs the scenarios named in names, comma-separated as in kill,term, for both stacks (balancing ones for each policy).
func (Bench) Run(names string) error { return runScenarios("-run", names) }

// Smoke runs kill, term, rolling and herd briefly, failing on any call rollcall loses (part of test).
func (Bench) Smoke() error {
	return runScenarios("-smoke", "-run", "kill,term,rolling,herd", "-stacks", "rollcall")
}

// runScenarios builds what the scenario program starts and runs it.
func runScenarios(args ...string) error {
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
	c.Stdout, c.Stderr = os.Stdout, os.Stderr
	return c.Run()
}
