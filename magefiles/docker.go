package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/magefile/mage/mg"
	"github.com/magefile/mage/sh"
)

// Image recipes and names. deployments/docker/<name>.Dockerfile builds the
// image rollcall/<name>:dev; deployments.Image (deployments/deployments.go)
// applies the same rule for the manifest and Compose tests, so keep the
// two in step.
const (
	dockerDir = "deployments/docker"
	imageRepo = "rollcall"
	imageTag  = "dev"
	// imageBinDir holds one build context per image: its static binary
	// (and for etcd, the empty directory its data goes under).
	imageBinDir = "bin/linux"
)

// Docker builds the container images.
type Docker mg.Namespace

// Build builds every image of deployments/docker (rollcall/NAME:dev) from static binaries built first; no image is pulled.
//
// Each image is FROM scratch around one binary built with CGO_ENABLED=0
// for the engine's architecture: etcd from the Go module the pkg module
// pins, each service from services/NAME/cmd/NAME.
func (Docker) Build() error {
	if err := dockerAnswers(); err != nil {
		return err
	}
	names, err := imageRecipes()
	if err != nil {
		return err
	}
	arch, err := sh.Output("docker", "version", "--format", "{{.Server.Arch}}")
	if err != nil {
		return fmt.Errorf("ask the Docker engine its architecture: %w", err)
	}
	start := time.Now()
	built := make([]string, 0, len(names))
	for _, name := range names {
		if err := buildImage(name, strings.TrimSpace(arch)); err != nil {
			return err
		}
		built = append(built, imageName(name))
	}
	fmt.Printf("built %d images in %v: %s\n", len(names), time.Since(start).Round(time.Second), strings.Join(built, ", "))
	return nil
}

// imageRecipes lists the image names, one per deployments/docker/NAME.Dockerfile.
func imageRecipes() ([]string, error) {
	files, err := filepath.Glob(filepath.Join(dockerDir, "*.Dockerfile"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no image recipe (*.Dockerfile) in %s", dockerDir)
	}
	names := make([]string, 0, len(files))
	for _, f := range files {
		names = append(names, strings.TrimSuffix(filepath.Base(f), ".Dockerfile"))
	}
	return names, nil
}

func imageName(name string) string { return imageRepo + "/" + name + ":" + imageTag }

// buildImage builds name's static binary into its build context, then the image.
func buildImage(name, arch string) error {
	ctxDir := filepath.Join(imageBinDir, name)
	if err := os.MkdirAll(ctxDir, 0o755); err != nil {
		return err
	}
	out, err := filepath.Abs(filepath.Join(ctxDir, name))
	if err != nil {
		return err
	}
	env := []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=" + arch}
	// -trimpath and no symbol table: smaller images that do not carry
	// the build machine's paths.
	build := []string{"build", "-trimpath", "-ldflags=-s -w", "-o", out}
	fmt.Printf("== %s: go build (linux/%s, static)\n", name, arch)
	if name == "etcd" {
		// The pkg module requires the etcd server module, so this is the
		// version the client library and the tests' embedded etcd use.
		err = runIn("pkg", env, "go", append(build, "go.etcd.io/etcd/server/v3")...)
		if err == nil {
			err = os.MkdirAll(filepath.Join(ctxDir, "data"), 0o755)
		}
	} else {
		dir := filepath.Join("services", name)
		if _, serr := os.Stat(filepath.Join(dir, "cmd", name)); serr != nil {
			return fmt.Errorf("%s/%s.Dockerfile: no command at %s/cmd/%s to build: %w", dockerDir, name, dir, name, serr)
		}
		err = runIn(dir, env, "go", append(build, "./cmd/"+name)...)
	}
	if err != nil {
		return err
	}
	fmt.Printf("== %s: docker build -t %s\n", name, imageName(name))
	args := []string{"build", "-t", imageName(name), "-f", filepath.Join(dockerDir, name+".Dockerfile")}
	if !mg.Verbose() {
		args = append(args, "--quiet")
	}
	return runIn(".", nil, "docker", append(args, ctxDir)...)
}

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
