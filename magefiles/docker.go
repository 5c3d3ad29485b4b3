package main

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"

	"github.com/magefile/mage/mg"
)

// Docker builds the container images.
type Docker mg.Namespace

// Build builds every image of deployments/docker (rollcall/NAME:dev) from static binaries built first; no image is pulled.
func (Docker) Build() error { return buildImages() }

// buildImages builds the images once per mage run: test's docker:build
// step and compose:test's dependency on it alike.
var buildImages = sync.OnceValue(func() error {
	if err := dockerAnswers(); err != nil {
		return err
	}
	return runIn(".", binaryEnv, "go", "run", "./deployments/cmd/images")
})

// dockerAnswers returns an error that says so unless a Docker engine answers.
func dockerAnswers() error {
	out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput()
	if err != nil {
		return fmt.Errorf("no Docker engine answers (`docker info`: %w: %s)", err, strings.TrimSpace(string(out)))
	}
	if strings.TrimSpace(string(out)) == "" {
		return errors.New("no Docker engine answers (`docker info` reports no server version)")
	}
	return nil
}
