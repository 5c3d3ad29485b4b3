package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/magefile/mage/mg"
)

// Gen regenerates protobuf code (buf) and wire injectors; running it twice changes nothing.
func Gen() error {
	if err := genProto(""); err != nil {
		return err
	}
	return runWire("gen")
}

// bufBin is where buildBuf puts buf. buf lives in its own module outside
// go.work because it raises protobuf and grpc to pre-releases in any module
// that requires it.
const bufBin = "bin/buf"

// buildBuf builds buf from its pinned module; after the first build (about
// two minutes on two cores) the Go build cache makes this a no-op.
func buildBuf() error {
	if _, err := os.Stat(bufBin); err != nil {
		fmt.Println("building buf (first run only, about two minutes)...")
	}
	abs, err := filepath.Abs(bufBin)
	if err != nil {
		return err
	}
	return runIn("tools/buf", append([]string{"GOWORK=off"}, binaryEnv...), "go", "build", "-o", abs, "github.com/bufbuild/buf/cmd/buf")
}

// genProto runs buf generate in api/, into outDir when it is not empty (so
// that check:gen can compare without touching the tree).
func genProto(outDir string) error {
	mg.Deps(buildBuf)
	bufAbs, err := filepath.Abs(bufBin)
	if err != nil {
		return err
	}
	args := []string{"generate"}
	if outDir != "" {
		args = append(args, "--output", outDir)
	}
	return runIn("api", binaryEnv, bufAbs, args...) // its plugins run through go tool
}

// wirePackages lists the packages that hold a wire injector:
// services/NAME/cmd/CMD/wire.go, the layout every service shares.
func wirePackages() ([]string, error) {
	files, err := filepath.Glob(filepath.Join("services", "*", "cmd", "*", "wire.go"))
	var pkgs []string
	for _, f := range files {
		pkgs = append(pkgs, "./"+filepath.Dir(f))
	}
	return pkgs, err
}

// runWire runs `go tool wire <command>` on every injector package at once,
// from the workspace root: one load type-checks what they share once.
func runWire(command string) error {
	pkgs, err := wirePackages()
	if err != nil || len(pkgs) == 0 {
		return err
	}
	if err := runIn(".", binaryEnv, "go", append([]string{"tool", "wire", command}, pkgs...)...); err != nil {
		return fmt.Errorf("wire %s: %w", command, err)
	}
	return nil
}

// compareGenerated fails when a file ending in suffix is under only one
// of committed and fresh, or differs between them.
func compareGenerated(committed, fresh, suffix string) error {
	var errs []error
	// The second walk looks only for files the first did not see.
	compare := func(root, other, onlyHere string, contents bool) error {
		return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, suffix) {
				return err
			}
			rel, err := filepath.Rel(root, path)
			if err != nil {
				return err
			}
			mine, err := os.ReadFile(path)
			theirs, otherErr := os.ReadFile(filepath.Join(other, rel))
			switch {
			case otherErr != nil:
				errs = append(errs, fmt.Errorf(onlyHere, filepath.Join(committed, rel)))
			case contents && !bytes.Equal(mine, theirs):
				errs = append(errs, fmt.Errorf("%s differs from its generator's output", filepath.Join(committed, rel)))
			}
			return err
		})
	}
	if err := compare(fresh, committed, "%s is not committed", true); err != nil {
		return err
	}
	if err := compare(committed, fresh, "%s is no longer generated", false); err != nil {
		return err
	}
	return errors.Join(errs...)
}
