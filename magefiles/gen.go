package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/rollcall/rollcall/magefiles/internal/protos"
)

// Gen regenerates protobuf code and wire injectors; running it twice changes nothing.
func Gen() error {
	if err := genProto(""); err != nil {
		return err
	}
	return runWire("gen")
}

// protoPlugins are the protoc plugins gen runs on the protos under api/,
// through go tool (the tools module pins them), each writing its files
// beside their proto. Add one here (and to the tools module) to generate
// more, e.g. a gateway or docs.
var protoPlugins = []protos.Plugin{
	{Command: []string{"go", "tool", "protoc-gen-go"}, Param: "paths=source_relative"},
	{Command: []string{"go", "tool", "protoc-gen-go-grpc"}, Param: "paths=source_relative"},
}

// genProto compiles the protos under api/ and runs protoPlugins on them,
// writing into api/, or into outDir when it is not empty (so that
// check:gen can compare without touching the tree).
func genProto(outDir string) error {
	tree, err := protos.Compile(context.Background(), "api")
	if err != nil {
		return err
	}
	if outDir == "" {
		outDir = "api"
	}
	return tree.Generate(context.Background(), "api", nil, outDir, protoPlugins...)
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
	if err := runIn(".", nil, "go", append([]string{"tool", "wire", command}, pkgs...)...); err != nil {
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
