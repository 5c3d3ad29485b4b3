package main

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/magefile/mage/mg"
	"github.com/magefile/mage/sh"
)

// Test runs every check CI runs: generated-code drift, lint, every module's tests with -race, the benchmark smoke, and the Compose test where a Docker engine answers.
//
// Each package is compiled once per build it needs: first the
// generated-code check, then every binary's packages (compileAll), then go
// vet, which compiles every package and test with -race for the tests
// too. The module tests, which mostly wait on processes and etcd, then run
// beside the rest of lint and the images; the smoke and the Compose test
// follow. What passed before with the same inputs is not run again: Go's
// test cache, and for the generated-code check, the build, vet, lint and
// the smoke a record of their inputs' hash in the user's cache directory.
// It prints each step's time.
func Test() error {
	start := time.Now()
	var mu sync.Mutex
	var took []string
	step := func(name string, run func() error) error {
		stepStart := time.Now()
		err := run()
		mu.Lock()
		took = append(took, fmt.Sprintf("%s %v", name, time.Since(stepStart).Round(time.Second)))
		mu.Unlock()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	}
	defer func() {
		fmt.Printf("test: %v in all: %s\n", time.Since(start).Round(time.Second), strings.Join(took, ", "))
	}()
	srcs, err := sources()
	if err != nil {
		return err
	}
	for _, s := range []struct {
		name string
		run  func() error
	}{{"check:gen", Check{}.Gen}, {"build", compileAll}, {"vet", vet}} {
		if err := step(s.name, func() error { return unlessPassed(s.name, srcs, s.run) }); err != nil {
			return err
		}
	}
	var besideErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		besideErr = step("lint", func() error { return unlessPassed("lint", srcs, lintBeyondVet) })
		if _, err := composeCommand(); besideErr == nil && err == nil && dockerAnswers() == nil {
			besideErr = step("docker:build", Docker{}.Build)
		}
	})
	testsErr := step("check:tests", Check{}.Tests)
	wg.Wait()
	if err := errors.Join(besideErr, testsErr); err != nil {
		return err
	}
	// Each alone: they count lost calls and attempts per call, which a
	// machine loaded by the module tests would raise.
	if err := step("bench:smoke", Bench{}.Smoke); err != nil {
		return err
	}
	return step("compose:test", Compose{}.Test)
}

// compileAll compiles the packages of every workspace module and etcd's
// server as every binary is built (binaryEnv), in one go command, without
// linking (go list -export): the binaries are linked where they are
// built. The tests and the images then find each package in Go's build
// cache. Without it, on a cold cache, the test processes that build
// binaries compile the same packages at once, each doing all the work.
func compileAll() error {
	pkgs, err := workspacePackages()
	if err != nil {
		return err
	}
	// Not magefiles: its main function is mage's to write.
	pkgs = slices.DeleteFunc(pkgs, func(p string) bool { return p == "./magefiles/..." })
	return runIn(".", binaryEnv, "go", append(append([]string{"list", "-export", "-f", "{{with .Error}}{{.}}{{end}}"}, pkgs...), "go.etcd.io/etcd/server/v3")...)
}

// Check groups the checks that Test runs, for running one at a time.
type Check mg.Namespace

// Gen fails when committed generated code (protobuf, wire) differs from what gen produces.
func (Check) Gen() error {
	tmp, err := os.MkdirTemp("", "rollcall-gen-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := genProto(tmp); err != nil {
		return err
	}
	errs := []error{compareGenerated("api", tmp, ".pb.go")}
	if err := runWire("diff"); err != nil {
		errs = append(errs, fmt.Errorf("wire_gen.go differs from what `mage gen` writes: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("generated code is stale; run `go run mage.go gen` and commit: %w", err)
	}
	return nil
}

// ranPackage matches a package whose tests ran rather than came from the cache.
var ranPackage = regexp.MustCompile(`(?m)^ok\s+(\S+)\s+[0-9.]+s`)

// Tests runs every workspace module's Go tests with -race, then each benchmark once in the packages whose tests ran.
//
// One go test runs every module's packages, so that a module's slow
// package does not hold the next module's back. Test results stay
// cacheable: a package whose result came from Go's test cache has not
// changed, nor has anything it depends on, so its benchmarks need not run
// again either.
func (Check) Tests() error {
	pkgs, err := workspacePackages()
	if err != nil {
		return err
	}
	fmt.Printf("== go test -race %s\n", strings.Join(pkgs, " "))
	var out bytes.Buffer
	// Most test binaries wait on processes and etcd: twice as many run at
	// once as the machine has cores. The timeout covers magefiles' tests
	// on a machine with empty caches: they build a copy of the repository
	// while everything else builds. No vet here: Lint's vet runs all of
	// vet's checks on the same packages.
	cmd := exec.Command("go", append([]string{"test", "-race", "-vet=off", "-p", strconv.Itoa(2 * runtime.NumCPU()), "-timeout", "25m"}, pkgs...)...)
	cmd.Stdout, cmd.Stderr = io.MultiWriter(os.Stdout, &out), os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go test: %w", err)
	}
	var ran []string
	for _, m := range ranPackage.FindAllStringSubmatch(out.String(), -1) {
		ran = append(ran, m[1])
	}
	benched, err := withBenchmarks(ran)
	if err != nil || len(benched) == 0 {
		return err
	}
	// Their packages are compiled already; only the test binaries are
	// linked again.
	return sh.RunV("go", append([]string{"test", "-race", "-vet=off", "-run", "^$", "-bench", ".", "-benchtime", "1x", "-timeout", "10m"}, benched...)...)
}

// withBenchmarks returns the packages of pkgs whose tests hold a benchmark.
func withBenchmarks(pkgs []string) ([]string, error) {
	if len(pkgs) == 0 {
		return nil, nil
	}
	out, err := sh.Output("go", append([]string{"list", "-f", "{{.ImportPath}} {{.Dir}} {{join .TestGoFiles \" \"}} {{join .XTestGoFiles \" \"}}"}, pkgs...)...)
	if err != nil {
		return nil, err
	}
	var benched []string
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		for _, file := range f[min(2, len(f)):] {
			src, err := os.ReadFile(filepath.Join(f[1], file))
			if err != nil {
				return nil, err
			}
			if bytes.Contains(src, []byte("\nfunc Benchmark")) {
				benched = append(benched, f[0])
				break
			}
		}
	}
	return benched, nil
}

// sources lists every file that generated code and lint depend on: Go
// and module files, protos, YAML (CI workflows), outside build outputs.
func sources() ([]string, error) {
	var files []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case d.IsDir() && (d.Name() == ".git" || d.Name() == "bin" || d.Name() == ".run"):
			return filepath.SkipDir
		case d.Name() == mageOutputFile:
			// mage's own, there only while it compiles the magefiles
		case !d.IsDir() && slices.Contains([]string{".go", ".mod", ".sum", ".work", ".proto", ".yaml", ".yml"}, filepath.Ext(path)):
			files = append(files, path)
		}
		return nil
	})
	return files, err
}

// mageOutputFile is the file mage writes into magefiles/ while it
// compiles them, and removes: a test that runs mage in this tree (new's
// refusals) may make it appear and vanish while lint reads the tree.
const mageOutputFile = "mage_output_file.go"

// unlessPassed runs step unless it passed before with inputs exactly as
// they are now, and records each pass in the user's cache directory, as
// Go's test cache does (delete rollcall/passed there to run it again).
func unlessPassed(step string, inputs []string, run func() error) error {
	h := sha256.New()
	for _, f := range inputs {
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %d\n", f, len(data))
		h.Write(data)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return run()
	}
	record := filepath.Join(cache, "rollcall", "passed", fmt.Sprintf("%s-%x", strings.ReplaceAll(step, ":", "-"), h.Sum(nil)))
	if _, err := os.Stat(record); err == nil {
		what := strings.Join(inputs, ", ")
		if len(inputs) > 5 {
			what = fmt.Sprintf("%d files", len(inputs))
		}
		fmt.Printf("%s: passed before with these inputs (%s); not run again\n", step, what)
		return nil
	}
	if err := run(); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(record), 0o755); err != nil {
		return err
	}
	return os.WriteFile(record, nil, 0o644)
}
