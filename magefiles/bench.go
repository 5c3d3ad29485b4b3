package main

import (
	"path/filepath"

	"github.com/magefile/mage/mg"
)

// Aliases lets `mage bench` run every scenario, and `mage demo:bad-deploy` name its demo as the docs do.
var Aliases = map[string]any{"bench": Bench.All, "demo:bad-deploy": Demo.BadDeploy}

// Bench measures discovery under failure and scale, rollcall beside etcd's naming package.
type Bench mg.Namespace

// All runs the Go benchmarks and every scenario for rollcall and the baseline, and writes docs/benchmarks.md.
func (Bench) All() error {
	return runScenarios("-gobench", "-write", filepath.Join("docs", "benchmarks.md"))
}

// Run runs the scenarios named in names, comma-separated as in kill,term, for both stacks (balancing ones for each policy).
func (Bench) Run(names string) error { return runScenarios("-run", names) }

// Models runs the same load and events through rollcall's client, the xDS control plane and nginx (docs/benchmarks.md).
func (Bench) Models() error { return runScenarios("-run", "models") }

// Smoke runs kill, term, rolling and herd briefly, failing on any call rollcall loses (part of test).
//
// It depends only on the binaries: when they are the ones that last
// passed, it is not run again.
func (Bench) Smoke() error {
	if err := buildScenarios(); err != nil {
		return err
	}
	bins := []string{"bin/etcd", "bin/greeter", "bin/baseline-greeter", "bin/scenarios"}
	return unlessPassed("bench:smoke", bins, func() error {
		return runIn(".", nil, filepath.Join("bin", "scenarios"), "-smoke", "-run", "kill,term,rolling,herd", "-stacks", "rollcall")
	})
}

// runScenarios builds what the scenario program starts and runs it.
func runScenarios(args ...string) error {
	if err := buildScenarios(); err != nil {
		return err
	}
	return runIn(".", nil, filepath.Join("bin", "scenarios"), args...)
}

// buildScenarios builds the scenario program and what it starts into bin/.
func buildScenarios() error {
	if err := buildBinaries(); err != nil {
		return err
	}
	abs, err := filepath.Abs("bin")
	if err != nil {
		return err
	}
	for _, cmd := range []string{"baseline-greeter", "scenarios"} { // bin/xds comes with buildBinaries
		if err := runIn("bench", binaryEnv, "go", "build", "-o", filepath.Join(abs, cmd), "./cmd/"+cmd); err != nil {
			return err
		}
	}
	return nil
}
