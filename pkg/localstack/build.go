package localstack

import (
	"fmt"
	"os"
	"os/exec"
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
