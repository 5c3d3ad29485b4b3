// Command images builds rollcall's container images, one per recipe
// deployments/docker/NAME.Dockerfile, tagged rollcall/NAME:dev: each FROM
// scratch around one static binary (CGO_ENABLED=0) built for the Docker
// engine's architecture, so no image is pulled. etcd is built from the Go
// module the pkg module pins; each service from services/NAME/cmd/NAME.
// `go run mage.go docker:build` runs it from the repository's root.
//
// It writes bin/linux/images.txt, one "IMAGE ID" line per image: the
// Compose test reads it, so that Go's test cache runs the test again when
// an image changes, and only then.
package main

import (
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/rollcall/rollcall/deployments"
)

const (
	recipes = "deployments/docker"
	// binDir holds one build context per image: its static binary (and
	// for etcd, the empty directory its data goes under).
	binDir = "bin/linux"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

func run() error {
	images, err := deployments.Images(recipes)
	if err != nil {
		return err
	}
	arch, err := output("docker", "version", "--format", "{{.Server.Arch}}")
	if err != nil {
		return fmt.Errorf("ask the Docker engine its architecture: %w", err)
	}
	start := time.Now()
	var ids strings.Builder
	for _, image := range slices.Sorted(maps.Keys(images)) {
		if err := build(images[image], arch); err != nil {
			return err
		}
		id, err := output("docker", "image", "inspect", "--format", "{{.Id}}", image)
		if err != nil {
			return err
		}
		fmt.Fprintf(&ids, "%s %s\n", image, id)
	}
	fmt.Printf("built %d images in %v:\n%s", len(images), time.Since(start).Round(time.Second), ids.String())
	return os.WriteFile(filepath.Join(binDir, "images.txt"), []byte(ids.String()), 0o644)
}

// build builds name's static binary into its build context, then the image.
func build(name, arch string) error {
	ctxDir := filepath.Join(binDir, name)
	if err := os.MkdirAll(ctxDir, 0o755); err != nil {
		return err
	}
	out, err := filepath.Abs(filepath.Join(ctxDir, name))
	if err != nil {
		return err
	}
	env := []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=" + arch}
	// -trimpath and no symbol table: smaller images that do not carry the
	// build machine's paths.
	goBuild := []string{"build", "-trimpath", "-ldflags=-s -w", "-o", out}
	fmt.Printf("== %s: go build (linux/%s, static)\n", name, arch)
	if name == "etcd" {
		// The pkg module requires the etcd server module: the version the
		// client library and the tests' etcd use.
		err = runIn("pkg", env, "go", append(goBuild, "go.etcd.io/etcd/server/v3")...)
		if err == nil {
			err = os.MkdirAll(filepath.Join(ctxDir, "data"), 0o755)
		}
	} else {
		dir := filepath.Join("services", name)
		if _, serr := os.Stat(filepath.Join(dir, "cmd", name)); serr != nil {
			return fmt.Errorf("%s/%s.Dockerfile: no command at %s/cmd/%s to build: %w", recipes, name, dir, name, serr)
		}
		err = runIn(dir, env, "go", append(goBuild, "./cmd/"+name)...)
	}
	if err != nil {
		return err
	}
	fmt.Printf("== %s: docker build -t %s\n", name, deployments.Image(name))
	return runIn(".", nil, "docker", "build", "--quiet", "-t", deployments.Image(name),
		"-f", filepath.Join(recipes, name+".Dockerfile"), ctxDir)
}

func runIn(dir string, env []string, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Dir, cmd.Env = dir, append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s (in %s): %w", name, strings.Join(args, " "), dir, err)
	}
	return nil
}

func output(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}
