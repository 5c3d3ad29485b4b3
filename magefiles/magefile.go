// Rollcall's build targets. Run `go run mage.go -l` (or `go tool mage -l`)
// from the repository root to list them; every target runs from the root.
package main

import (
	"fmt"

	"github.com/magefile/mage/mg"
)

// Default is what `mage` alone runs.
var Default = Test

// Gen regenerates protobuf code (buf) and wire injectors; running it twice changes nothing.
func Gen() error {
	if err := genProto(""); err != nil {
		return err
	}
	return genWire()
}

// Lint runs go vet and gofmt on every module, buf lint on the protos and actionlint on the CI workflows.
func Lint() error {
	mg.Deps(buildBuf)
	return lint()
}

// Test runs every check CI runs: generated-code drift, lint, every module's tests with -race, the benchmark smoke, and the Compose test where a Docker engine answers.
func Test() {
	mg.SerialDeps(Check.Gen, Lint, Check.Tests, Bench.Smoke, Compose.Test)
}

// Check groups the checks that Test runs, for running one at a time.
type Check mg.Namespace

// Gen fails when committed generated code (protobuf, wire) differs from what gen produces.
func (Check) Gen() error {
	return checkGen()
}

// Tests runs every workspace module's Go tests with -race, and each of its benchmarks once.
func (Check) Tests() error {
	return goTestAll()
}

// Rename changes the module-path prefix of every module (for example to github.com/you/shop) and regenerates code.
func Rename(newPrefix string) error {
	old, err := modulePrefix()
	if err != nil {
		return err
	}
	if err := rename(old, newPrefix); err != nil {
		return fmt.Errorf("rename %s to %s: %w", old, newPrefix, err)
	}
	return Gen()
}
