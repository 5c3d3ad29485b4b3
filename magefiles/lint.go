package main

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/magefile/mage/mg"
	"github.com/magefile/mage/sh"
)

// Lint runs go vet and gofmt on every module, buf lint on the protos and actionlint on the CI workflows.
func Lint() error {
	mg.Deps(buildBuf)
	var errs []error
	errs = append(errs, forEachModule(func(dir string) error {
		return runIn(dir, nil, "go", "vet", "./...")
	}))
	unformatted, err := sh.Output("gofmt", "-l", ".")
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("gofmt: %w", err))
	case unformatted != "":
		errs = append(errs, fmt.Errorf("gofmt would change:\n%s", unformatted))
	}
	bufAbs, err := filepath.Abs(bufBin)
	if err != nil {
		return err
	}
	errs = append(errs, runIn("api", nil, bufAbs, "lint"))
	errs = append(errs, sh.RunV("go", "tool", "actionlint"))
	return errors.Join(errs...)
}
