package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestNewService scaffolds a service in a copy of the repository and checks
// that it builds, passes its own tests (which run its processes and
// resolve them under the new name) and builds outside the workspace.
func TestNewService(t *testing.T) {
	t.Parallel() // in a copy of its own, as rename's test
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
	// Built as the binaries are; vet is rename's test's to run.
	run(t, shop, binaryEnv, "go", "test", "-vet=off", "-timeout", "10m", "./...")
	run(t, shop, slices.Concat(binaryEnv, []string{"GOWORK=off"}), "go", "build", "./...")
}

// new refuses a bad name and an existing service before it writes
// anything, naming what is wrong: the command as README gives it.
func TestNewRefusesBadInput(t *testing.T) {
	t.Parallel() // writes nothing: the other tests work in copies
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	// Compared before and after: the user's own uncommitted changes are
	// no failure of new.
	status := func() string {
		out, err := exec.Command("git", "-C", root, "status", "--porcelain", "--", "services", "api", "go.work", "deployments").Output()
		if err != nil {
			t.Fatalf("git status: %v", err)
		}
		return string(out)
	}
	before := status()
	for _, tt := range []struct{ name, want string }{
		{"Shop", `invalid service name "Shop"`},
		{"1shop", `invalid service name "1shop"`},
		{"shop-api", `invalid service name "shop-api"`},
		{"", `invalid service name ""`},
		{"greeter", "services/greeter already exists"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command("go", "run", "mage.go", "new", tt.name)
			cmd.Dir = root
			if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), tt.want) {
				t.Errorf("mage new %q: %v\n%s\nwant an error saying %s", tt.name, err, out, tt.want)
			}
		})
	}
	if after := status(); after != before {
		t.Errorf("the tree changed:\nbefore\n%s\nafter\n%s", before, after)
	}
}

// rename changes the module-path prefix everywhere: afterwards no source,
// module or doc file names the old one, generated code included (rename
// regenerates it), and every module type-checks.
func TestRenameChangesEveryModulePath(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("copies the repository and builds every module")
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	repo := copyRepo(t, root)
	old, err := modulePrefix(root)
	if err != nil {
		t.Fatal(err)
	}
	run(t, repo, nil, "go", "run", "mage.go", "rename", "example.com/you/shop")
	if out, err := exec.Command("grep", "-rl", "--include=*.go", "--include=*.mod", "--include=*.md", "--include=*.proto", old, repo).Output(); len(out) > 0 {
		t.Errorf("files still name %s (%v):\n%s", old, err, out)
	}
	work, err := os.ReadFile(filepath.Join(repo, "go.work"))
	if err != nil {
		t.Fatal(err)
	}
	var pkgs []string
	for line := range strings.SplitSeq(string(work), "\n") {
		if dir, ok := strings.CutPrefix(strings.TrimSpace(line), "./"); ok && dir != "tools" { // tools: requirements only
			pkgs = append(pkgs, "./"+dir+"/...")
		}
	}
	// Type-checks every package and test, as lint's vet does.
	run(t, repo, raceEnv, "go", append([]string{"vet"}, pkgs...)...)
}

// copyRepo copies the files git tracks (as they are in the working tree)
// into a temporary directory; etcd comes from the machine's cache, as for
// the original. It reads the files in this process, so that Go's test
// cache runs the test again when any changes.
func copyRepo(t *testing.T, root string) string {
	t.Helper()
	out, err := exec.Command("git", "-C", root, "ls-files", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	dst := tempDir(t)
	for _, f := range strings.Fields(string(out)) {
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

// tempDir is t.TempDir without its cleanup's os.RemoveAll, which opens
// the parent directory, the system's temporary directory: Go's test cache
// would key the result on that directory's listing, which other
// programs change all the time. A child process removes it instead.
func tempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "rollcall-"+t.Name()+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("rm", "-rf", dir).CombinedOutput(); err != nil {
			t.Errorf("rm -rf %s: %v\n%s", dir, err, out)
		}
	})
	return dir
}

// run runs a command in dir with env added: with none, as a user would
// (mage and the tools are then found built in Go's build cache).
func run(t *testing.T, dir string, env []string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s (in %s): %v\n%s", name, strings.Join(args, " "), dir, err, out)
	}
	t.Logf("%s %s: %v", name, strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
}
