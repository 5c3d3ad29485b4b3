// Package deployments holds rollcall's container images (docker/), its
// Docker Compose stack (compose/) and its Kubernetes manifests (k8s/), with
// the tests that check them against the code: a static test of every
// manifest, and a Compose test that breaks the running stack under load.
package deployments

import (
	"fmt"
	"path/filepath"
	"strings"
)

// The image naming rule: docker/<name>.Dockerfile builds the image
// rollcall/<name>:dev (cmd/images, which `mage docker:build` runs).
const (
	ImageRepo = "rollcall"
	ImageTag  = "dev"
)

// Image is the name `mage docker:build` gives the image of recipe name.
func Image(name string) string { return ImageRepo + "/" + name + ":" + ImageTag }

// Images maps every image that `mage docker:build` produces from the
// recipes in dockerDir to its recipe name (etcd, greeter, ...).
func Images(dockerDir string) (map[string]string, error) {
	files, err := filepath.Glob(filepath.Join(dockerDir, "*.Dockerfile"))
	if err != nil {
		return nil, fmt.Errorf("list image recipes: %w", err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no image recipe (*.Dockerfile) in %s", dockerDir)
	}
	images := make(map[string]string, len(files))
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".Dockerfile")
		images[Image(name)] = name
	}
	return images, nil
}
