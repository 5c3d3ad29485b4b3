package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestNewService scaffolds a service in a copy of the repository and checks
// that it builds, passes its own tests (which run its processes and
// resolve them under the new name) and builds outside the workspace.
func TestNewService(t *testing.T) {
	if testing.Short() {
		t.Skip("copies the repository and runs the new service's tests")
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	repo := copyRepo(t, root)
	run(t, repo, nil, "go", "run", "mage.go", "new", "shop")

	proto, err := os.ReadFile(filepath.Join(repo, "api/shop/v1/shop.proto"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"package shop.v1;", "service ShopService", "api/shop/v1;shopv1"} {
		if !strings.Contains(string(proto), want) {
			t.Errorf("shop.proto lacks %q", want)
		}
	}
	if recipe, err := os.ReadFile(filepath.Join(repo, "deployments/docker/shop.Dockerfile")); err != nil || !strings.Contains(string(recipe), "COPY shop /shop") {
		t.Errorf("no image recipe for shop (%v):\n%s", err, recipe)
	}
	work, _ := os.ReadFile(filepath.Join(repo, "go.work"))
	if !strings.Contains(string(work), "./services/shop") {
		t.Errorf("go.work does not use ./services/shop:\n%s", work)
	}
	shop := filepath.Join(repo, "services/shop")
	run(t, shop, nil, "go", "test", "./...")
	run(t, shop, []string{"GOWORK=off"}, "go", "build", "./...")
	run(t, repo, nil, "go", "run", "mage.go", "check:gen")
}

// copyRepo copies the files git tracks (as they are in the working tree)
// and the built tools into a temporary directory. It reads them in this
// process, so that Go's test cache runs the test again when any changes.
func copyRepo(t *testing.T, root string) string {
	t.Helper()
	out, err := exec.Command("git", "-C", root, "ls-files", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	dst := t.TempDir()
	files := strings.Fields(string(out))
	if _, err := os.Stat(filepath.Join(root, bufBin)); err == nil {
		files = append(files, bufBin)
	}
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(root, f))
		if os.IsNotExist(err) {
			continue // deleted in the working tree
		}
		if err != nil {
			t.Fatal(err)
		}
		info, _ := os.Stat(filepath.Join(root, f))
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dst, f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, f), data, info.Mode()); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func run(t *testing.T, dir string, env []string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s (in %s): %v\n%s", name, strings.Join(args, " "), dir, err, out)
	}
}
