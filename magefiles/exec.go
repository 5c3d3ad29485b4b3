package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
// (static, -trimpath); lint's type information and new's build check use
// it too, so that Go's build cache compiles each dependency once for all
// of them and for the images.
var binaryEnv = []string{"CGO_ENABLED=0", "GOFLAGS=-trimpath"}

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
	var patterns []string
	for _, dir := range dirs {
		list := exec.Command("go", "list", "./...")
		list.Dir = dir
		var stderr bytes.Buffer
		list.Stderr = &stderr
		out, err := list.Output()
		if err != nil {
			return nil, fmt.Errorf("go list ./... in %s: %w\n%s", dir, err, stderr.String())
		}
		if strings.TrimSpace(string(out)) != "" {
			patterns = append(patterns, "./"+filepath.ToSlash(dir)+"/...")
		}
	}
	return patterns, nil
}
