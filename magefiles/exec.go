package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/magefile/mage/mg"
	"github.com/magefile/mage/sh"
)

// workspaceModules lists the directories of the modules that go.work uses.
func workspaceModules() ([]string, error) {
	out, err := sh.Output("go", "work", "edit", "-json")
	if err != nil {
		return nil, fmt.Errorf("read go.work: %w", err)
	}
	var work struct{ Use []struct{ DiskPath string } }
	if err := json.Unmarshal([]byte(out), &work); err != nil {
		return nil, fmt.Errorf("parse go.work: %w", err)
	}
	dirs := make([]string, 0, len(work.Use))
	for _, u := range work.Use {
		dirs = append(dirs, filepath.Clean(u.DiskPath))
	}
	return dirs, nil
}

// binaryEnv is how every binary is built, as pkg/localstack.BuildEnv
// (static, -trimpath); new's build check uses it too, so that Go's build
// cache compiles each dependency once for the binaries and the images.
var binaryEnv = []string{"CGO_ENABLED=0", "GOFLAGS=-trimpath"}

// raceEnv is how vet and staticcheck read the packages: from the build
// the tests need anyway (-race), so that each package and test is
// compiled once for the tests and for lint. The tools themselves build
// through go tool, which takes no build flags: as mage built itself.
var raceEnv = []string{"GOFLAGS=-race"}

// runIn runs a command in dir, with env added to this process's
// environment and its output on the terminal.
func runIn(dir string, env []string, name string, args ...string) error {
	if mg.Verbose() {
		fmt.Printf("exec (in %s): %s %s\n", dir, name, strings.Join(args, " "))
	}
	cmd := exec.Command(name, args...)
	cmd.Dir, cmd.Env = dir, append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s (in %s): %w", name, strings.Join(args, " "), dir, err)
	}
	return nil
}

// workspacePackages returns the pattern ./DIR/... of every workspace
// module that has Go packages, for one go command over all of them
// (tools-only modules would warn "matched no packages").
func workspacePackages() ([]string, error) {
	dirs, err := workspaceModules()
	if err != nil {
		return nil, err
	}
	patterns := make([]string, len(dirs))
	for i, dir := range dirs {
		patterns[i] = "./" + filepath.ToSlash(dir) + "/..."
	}
	// One go list for every module: each go command loads the workspace.
	list := exec.Command("go", append([]string{"list", "-f", "{{.Module.Dir}}"}, patterns...)...)
	var stderr bytes.Buffer
	list.Stderr = &stderr
	out, err := list.Output()
	if err != nil {
		return nil, fmt.Errorf("go list %s: %w\n%s", strings.Join(patterns, " "), err, stderr.String())
	}
	root, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	withPackages := map[string]bool{}
	for dir := range strings.Lines(string(out)) {
		withPackages[strings.TrimSpace(dir)] = true
	}
	return slices.DeleteFunc(patterns, func(p string) bool {
		return !withPackages[filepath.Join(root, strings.TrimSuffix(p, "/..."))]
	}), nil
}
