package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/magefile/mage/sh"

	"github.com/rollcall/rollcall/magefiles/internal/protos"
)

// Lint runs go vet and staticcheck on every module, goimports (gofmt plus import groups: standard, others, rollcall) on the tree, buf's STANDARD lint rules on the protos and actionlint on the CI workflows.
func Lint() error {
	return errors.Join(vet(), lintBeyondVet())
}

// vet runs go vet on every workspace package and test, compiling them
// with -race as the tests do (raceEnv): run before the tests, it is their
// compile step too.
func vet() error {
	pkgs, err := workspacePackages()
	if err != nil {
		return err
	}
	return runIn(".", raceEnv, "go", append([]string{"vet"}, pkgs...)...)
}

// lintBeyondVet runs every check of Lint but go vet.
func lintBeyondVet() error {
	pkgs, err := workspacePackages()
	if err != nil {
		return err
	}
	errs := []error{runIn(".", raceEnv, "go", append([]string{"tool", "staticcheck"}, pkgs...)...)}
	srcs, err := sources()
	if err != nil {
		return err
	}
	goFiles := slices.DeleteFunc(srcs, func(f string) bool { return filepath.Ext(f) != ".go" })
	out, err := sh.Output("go", append([]string{"tool", "goimports", "-local", "github.com/rollcall/rollcall", "-l"}, goFiles...)...)
	var unformatted []string
	for _, f := range strings.Fields(out) {
		// Generated files keep their generators' layout.
		if !strings.HasSuffix(f, ".pb.go") && filepath.Base(f) != "wire_gen.go" {
			unformatted = append(unformatted, f)
		}
	}
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("goimports: %w", err))
	case len(unformatted) > 0:
		errs = append(errs, fmt.Errorf("goimports -local github.com/rollcall/rollcall would change:\n%s", strings.Join(unformatted, "\n")))
	}
	errs = append(errs, lintProtos(), runIn(".", nil, "go", "tool", "actionlint"))
	return errors.Join(errs...)
}

// lintProtos checks the protos under api/ against buf's STANDARD rules.
func lintProtos() error {
	tree, err := protos.Compile(context.Background(), "api")
	if err != nil {
		return err
	}
	findings := tree.Lint()
	if len(findings) == 0 {
		return nil
	}
	lines := make([]string, len(findings))
	for i, f := range findings {
		lines[i] = f.String()
	}
	return fmt.Errorf("the protos break buf's STANDARD lint rules:\n%s", strings.Join(lines, "\n"))
}
