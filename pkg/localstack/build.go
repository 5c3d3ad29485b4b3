package localstack

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// BuildEnv is how every binary of the local stack is built, by `mage up`,
// the benchmarks, the images and the tests that start processes alike:
// static (no cgo, as a FROM scratch image needs) and with -trimpath. One
// configuration lets Go's build cache compile each dependency once for
// all of them; each configuration more compiles every dependency again.
// magefiles spells the same settings (it imports nothing of pkg).
var BuildEnv = []string{"CGO_ENABLED=0", "GOFLAGS=-trimpath"}

// Build runs `go build -o out pkg` in dir with BuildEnv.
func Build(dir, out, pkg string) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir, cmd.Env = dir, append(os.Environ(), BuildEnv...)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build -o %s %s (in %s): %w\n%s", out, pkg, dir, err, msg)
	}
	return nil
}

// etcdModule is the etcd server's Go module, whose main package is etcd.
const etcdModule = "go.etcd.io/etcd/server/v3"

// EtcdBinary returns an etcd server binary built from the version of
// etcd's server module that the module (or workspace) at dir requires,
// building it once per machine into the user's cache directory
// (rollcall/etcd/etcd-VERSION): processes that ask at once wait on a file
// lock, and one builds.
func EtcdBinary(dir string) (string, error) {
	list := exec.Command("go", "list", "-m", "-f", "{{.Version}}", etcdModule)
	list.Dir = dir
	out, err := list.Output()
	version := strings.TrimSpace(string(out))
	if err != nil || version == "" {
		var exit *exec.ExitError
		switch {
		case errors.As(err, &exit):
			err = fmt.Errorf("%w: %s", err, bytes.TrimSpace(exit.Stderr))
		case err == nil:
			err = errors.New("go list printed no version")
		}
		return "", fmt.Errorf("the version of %s that the module in %s requires: %w", etcdModule, dir, err)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("where to keep etcd: %w", err)
	}
	bin := filepath.Join(cache, "rollcall", "etcd", "etcd-"+version)
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
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return "", fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	defer unix.Flock(int(lock.Fd()), unix.LOCK_UN)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil // built while this process waited
	}
	// Built beside and renamed, so that no one runs a half-written binary.
	tmp := fmt.Sprintf("%s.%d", bin, os.Getpid())
	if err := Build(dir, tmp, etcdModule); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, bin); err != nil {
		os.Remove(tmp)
		return "", err
	}
	return bin, nil
}
