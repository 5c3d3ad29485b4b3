package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/magefile/mage/mg"
)

// Test runs every check CI runs: generated-code drift, lint, every module's tests with -race, the benchmark smoke, and the Compose test where a Docker engine answers.
func Test() {
	mg.SerialDeps(Check.Gen, Lint, Check.Tests, Bench.Smoke, Compose.Test)
}

// Check groups the checks that Test runs, for running one at a time.
type Check mg.Namespace

// Gen fails when committed generated code (protobuf, wire) differs from what gen produces.
func (Check) Gen() error {
	tmp, err := os.MkdirTemp("", "rollcall-gen-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := genProto(tmp); err != nil {
		return err
	}
	errs := []error{compareGenerated("api", tmp, ".pb.go")}
	if err := runWire("diff"); err != nil {
		errs = append(errs, fmt.Errorf("wire_gen.go differs from what `mage gen` writes: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("generated code is stale; run `go run mage.go gen` and commit: %w", err)
	}
	return nil
}

// Tests runs every workspace module's Go tests with -race, and each of its benchmarks once.
func (Check) Tests() error {
	return forEachModule(func(dir string) error {
		// Every benchmark runs once too, so that none rots between full runs.
		fmt.Printf("== go test -race -bench . -benchtime 1x %s\n", dir)
		return runIn(dir, nil, "go", "test", "-race", "-bench", ".", "-benchtime", "1x", "./...")
	})
}
