package deployments_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// `go run mage.go compose:up` runs three etcd members, three greeters and
// the client, whose calls are answered; `compose:down` removes them all,
// as README says.
func TestComposeUpAndDown(t *testing.T) {
	cli := strings.Fields(os.Getenv("ROLLCALL_COMPOSE"))
	if len(cli) == 0 {
		t.Skip("needs a Docker engine and ROLLCALL_COMPOSE: run `go run mage.go compose:test`")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// compose:up's project: never take down a stack a developer runs.
	compose := func(ctx context.Context, args ...string) string {
		t.Helper()
		out, err := run(ctx, nil, cli[0], slices.Concat(cli[1:], []string{"-p", "rollcall", "-f", composeFile}, args)...)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	if running := compose(ctx, "ps", "--quiet"); running != "" {
		t.Skip("a compose:up stack is running; this test would take it down")
	}
	// What compose:up and compose:down run: reading it makes Go's test
	// cache run this test again when it changes.
	if _, err := os.ReadFile(filepath.Join(repoRoot, "magefiles", "compose.go")); err != nil {
		t.Fatal(err)
	}
	mage := func(target string) {
		t.Helper()
		cmd := exec.CommandContext(ctx, "go", "run", "mage.go", target)
		cmd.Dir = repoRoot
		// compose.yaml reads CLIENT_* and REGISTER_TTL: the stack README
		// describes, not one a developer's settings changed.
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "CLIENT_") && !strings.HasPrefix(kv, "REGISTER_") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go run mage.go %s: %v\n%s", target, err, out)
		}
	}
	mage("compose:up")
	t.Cleanup(func() { compose(context.Background(), "down", "--volumes", "--remove-orphans", "--timeout", "5") })

	want := []string{"client", "etcd-1", "etcd-2", "etcd-3", "greeter-1", "greeter-2", "greeter-3"}
	if got := strings.Fields(compose(ctx, "ps", "--services", "--filter", "status=running")); !slices.Equal(slices.Sorted(slices.Values(got)), want) {
		t.Errorf("running after compose:up: %v, want %v", got, want)
	}
	for answered := false; !answered; {
		answered = strings.Contains(compose(ctx, "logs", "client"), "Hello rollcall from greeter-")
		if !answered {
			select {
			case <-ctx.Done():
				t.Fatalf("the client's calls were never answered:\n%s", compose(ctx, "logs", "client"))
			case <-time.After(time.Second): // polls the client's log; no event to await from outside
			}
		}
	}

	mage("compose:down")
	if left := compose(ctx, "ps", "--all", "--quiet"); left != "" {
		t.Errorf("containers left after compose:down: %s", left)
	}
}
