package main

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Gen regenerates protobuf code (buf) and wire injectors; running it twice changes nothing.
func Gen() error {
	if err := genProto(""); err != nil {
		return err
	}
	return runWire("gen")
}

// bufBinary returns buf, built from its pinned module (tools/buf) once per
// machine into the user's cache directory (rollcall/buf/buf-HASH, HASH
// from tools/buf's go.sum), as pkg/localstack builds etcd. On a cold
// machine check:gen, lint and the tests' copies of the repository ask for
// it at once: one process builds while the others wait on a file lock,
// rather than each compiling buf's 870 packages. buf lives in its own
// module outside go.work because it raises protobuf and grpc to
// pre-releases in any module that requires it.
func bufBinary() (string, error) {
	sum, err := os.ReadFile(filepath.Join("tools", "buf", "go.sum"))
	if err != nil {
		return "", fmt.Errorf("buf's pinned versions: %w", err)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("where to keep buf: %w", err)
	}
	bin := filepath.Join(cache, "rollcall", "buf", fmt.Sprintf("buf-%x", sha256.Sum256(sum))[:16])
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(bin+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil // built while this process waited
	}
	fmt.Println("building buf (once per machine, about two minutes on two cores)...")
	// Built beside and renamed, so that no one runs a half-written binary.
	tmp := fmt.Sprintf("%s.%d", bin, os.Getpid())
	if err := runIn(filepath.Join("tools", "buf"), append([]string{"GOWORK=off"}, binaryEnv...), "go", "build", "-o", tmp, "github.com/bufbuild/buf/cmd/buf"); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, bin); err != nil {
		os.Remove(tmp)
		return "", err
	}
	return bin, nil
}

// genProto runs buf generate in api/, into outDir when it is not empty (so
// that check:gen can compare without touching the tree).
func genProto(outDir string) error {
	buf, err := bufBinary()
	if err != nil {
		return err
	}
	args := []string{"generate"}
	if outDir != "" {
		args = append(args, "--output", outDir)
	}
	return runIn("api", binaryEnv, buf, args...) // its plugins run through go tool
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
	if err := runIn(".", binaryEnv, "go", append([]string{"tool", "wire", command}, pkgs...)...); err != nil {
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
