package deployments_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rollcall/rollcall/deployments"
	"github.com/rollcall/rollcall/pkg/localstack"
)

// repoRoot is the repository root; tests run in deployments/.
const repoRoot = ".."

// images lists what `mage docker:build` produces, image -> recipe name.
func images(t *testing.T) map[string]string {
	t.Helper()
	imgs, err := deployments.Images("docker")
	if err != nil {
		t.Fatal(err)
	}
	return imgs
}

// binaryHelp is what a service binary's -h says: its flags' defaults and
// the environment variables it reads.
type binaryHelp struct {
	defaults map[string]string // flag -> default, for flags that print one
	env      map[string]string // variable -> flag
}

var (
	helpMu    sync.Mutex
	helpCache = map[string]binaryHelp{}
)

// serviceHelp builds services/<name>/cmd/<name> and parses its -h. It
// reports false when name is not a service of this repository (etcd).
func serviceHelp(t *testing.T, name string) (binaryHelp, bool) {
	t.Helper()
	dir := filepath.Join(repoRoot, "services", name)
	if _, err := os.Stat(filepath.Join(dir, "cmd", name)); err != nil {
		return binaryHelp{}, false
	}
	helpMu.Lock()
	defer helpMu.Unlock()
	if h, ok := helpCache[name]; ok {
		return h, true
	}
	// The binary's flags come from the service's and pkg's code, which a
	// child process compiles: reading it here makes Go's test cache run
	// the test again when it changes.
	for _, src := range []string{dir, filepath.Join(repoRoot, "pkg")} {
		consultSources(t, src)
	}
	bin := filepath.Join(t.TempDir(), name)
	if err := localstack.Build(dir, bin, "./cmd/"+name); err != nil {
		t.Fatal(err)
	}
	// -h exits 2 after printing the usage on stderr.
	out, _ := exec.Command(bin, "-h").CombinedOutput()
	h, err := parseHelp(out)
	if err != nil {
		t.Fatalf("%s -h: %v\n%s", name, err, out)
	}
	helpCache[name] = h
	return h, true
}

var (
	flagLine    = regexp.MustCompile(`^  -(\S+)`)
	defaultText = regexp.MustCompile(`\(default "?(.*?)"?\)$`)
	envLine     = regexp.MustCompile(`^  -(\S+)\s+<- \$(\S+)$`)
)

// parseHelp reads the flag package's usage (flag, then indented usage
// lines ending in "(default X)") and pkg/flagenv's "Environment fallbacks"
// section ("  -flag  <- $VAR").
func parseHelp(out []byte) (binaryHelp, error) {
	h := binaryHelp{defaults: map[string]string{}, env: map[string]string{}}
	inEnv, flagName := false, ""
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "Environment fallbacks:":
			inEnv = true
		case inEnv:
			if m := envLine.FindStringSubmatch(line); m != nil {
				h.env[m[2]] = m[1]
			}
		case flagLine.MatchString(line):
			flagName = flagLine.FindStringSubmatch(line)[1]
		case strings.HasPrefix(line, "    \t") && flagName != "":
			if m := defaultText.FindStringSubmatch(line); m != nil {
				h.defaults[flagName] = m[1]
			}
		}
	}
	if len(h.env) == 0 {
		return h, errors.New("no \"Environment fallbacks\" section")
	}
	return h, sc.Err()
}

// value is the setting of flag in env (variable -> value), else its default.
func (h binaryHelp) value(env map[string]string, flagName string) string {
	for variable, f := range h.env {
		if v, ok := env[variable]; ok && f == flagName {
			return v
		}
	}
	return h.defaults[flagName]
}

// duration is value, parsed; a bad or missing one fails the test.
func (h binaryHelp) duration(t *testing.T, env map[string]string, flagName string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(h.value(env, flagName))
	if err != nil {
		t.Fatalf("-%s: %v", flagName, err)
	}
	return d
}

// goRuntimeEnv is read by the Go runtime of every binary, not by its flags.
var goRuntimeEnv = map[string]bool{"GOMAXPROCS": true, "GOMEMLIMIT": true, "GOGC": true, "GODEBUG": true, "GOTRACEBACK": true}

// checkEnvNames fails for every variable set that the binary does not
// read, unless another value refers to it as $(NAME) (Kubernetes
// expansion): such a variable only feeds that value. A binary with an
// OpenTelemetry flag reads the SDK's own OTEL_* variables too.
func checkEnvNames(t *testing.T, where string, h binaryHelp, env map[string]string, refs string) {
	t.Helper()
	otel := slices.ContainsFunc(slices.Collect(maps.Keys(h.env)), func(v string) bool { return strings.HasPrefix(v, "OTEL_") })
	for name := range env {
		if _, ok := h.env[name]; ok || goRuntimeEnv[name] || otel && strings.HasPrefix(name, "OTEL_") || strings.Contains(refs, "$("+name+")") {
			continue
		}
		t.Errorf("%s sets %s, which the binary does not read (its -h lists %v)", where, name, slices.Sorted(maps.Keys(h.env)))
	}
}

// etcdBinary is the etcd the tests run (localstack.EtcdBinary), built
// once per machine.
var etcdBinary = sync.OnceValues(func() (string, error) { return localstack.EtcdBinary(".") })

// etcdFlags has etcd itself check args: it parses them as it does when it
// starts, then the --version added makes it exit, so a misspelt flag, a
// stray argument or a malformed URL fails here as it would at start. It
// returns each flag's value as args give it (the last, if given twice).
func etcdFlags(args []string) (map[string]string, error) {
	bin, err := etcdBinary()
	if err != nil {
		return nil, err
	}
	out, err := exec.Command(bin, append(slices.Clone(args), "--version")...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("etcd flags %q: %w: %s", args, err, bytes.TrimSpace(out))
	}
	values := map[string]string{}
	for i := 0; i < len(args); i++ {
		name, value, hasValue := strings.Cut(strings.TrimLeft(args[i], "-"), "=")
		if !hasValue && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
			i++
			value, hasValue = args[i], true
		}
		if !hasValue {
			value = "true" // a boolean flag
		}
		values[name] = value
	}
	return values, nil
}

// urlPorts returns the host and port of every URL of a comma-separated list.
func urlPorts(list string) ([][2]string, error) {
	var out [][2]string
	for raw := range strings.SplitSeq(list, ",") {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil {
			return nil, err
		}
		out = append(out, [2]string{u.Hostname(), u.Port()})
	}
	return out, nil
}

// splitHostPort is net.SplitHostPort with the port as a number.
func splitHostPort(addr string) (string, int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		return "", 0, fmt.Errorf("port of %q: %w", addr, err)
	}
	return host, n, nil
}

// consultSources reads every Go source and module file under dir.
func consultSources(t *testing.T, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !(strings.HasSuffix(path, ".go") || d.Name() == "go.mod" || d.Name() == "go.sum") {
			return err
		}
		_, err = os.ReadFile(path)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
