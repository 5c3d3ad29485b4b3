package deployments_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"sigs.k8s.io/yaml"

	"github.com/rollcall/rollcall/deployments"
	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/serve"
)

const composeFile = "compose/compose.yaml"

// composeSpec is the part of compose/compose.yaml the tests read.
type composeSpec struct {
	Services map[string]composeService `json:"services"`
}

type composeService struct {
	Image           string            `json:"image"`
	Command         []string          `json:"command"`
	Environment     map[string]string `json:"environment"`
	Networks        json.RawMessage   `json:"networks"` // a list of names, or a map of name to settings
	StopGracePeriod string            `json:"stop_grace_period"`
}

// networks maps each network the service joins to its aliases there.
func (s composeService) networks() (map[string][]string, error) {
	var list []string
	if err := json.Unmarshal(s.Networks, &list); err == nil {
		out := map[string][]string{}
		for _, n := range list {
			out[n] = nil
		}
		return out, nil
	}
	var m map[string]*struct {
		Aliases []string `json:"aliases"`
	}
	if err := json.Unmarshal(s.Networks, &m); err != nil {
		return nil, fmt.Errorf("networks: %w", err)
	}
	out := map[string][]string{}
	for n, v := range m {
		if v != nil {
			out[n] = v.Aliases
		} else {
			out[n] = nil
		}
	}
	return out, nil
}

var interpolation = regexp.MustCompile(`\$\{(\w+)(:-([^}]*))?\}`)

// defaults replaces each ${VAR:-default} by its default, the value of a
// stack started without those variables; a ${VAR} without one is an error.
func defaults(v string) (string, error) {
	var err error
	out := interpolation.ReplaceAllStringFunc(v, func(m string) string {
		sub := interpolation.FindStringSubmatch(m)
		if sub[2] == "" {
			err = fmt.Errorf("%s has no default", m)
		}
		return sub[3]
	})
	return out, err
}

// TestComposeFile checks compose/compose.yaml against the code, the way
// TestManifests checks the Kubernetes manifests; TestCompose runs it.
func TestComposeFile(t *testing.T) {
	data, err := os.ReadFile(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	var spec composeSpec
	if err := yaml.Unmarshal(data, &spec); err != nil {
		t.Fatalf("%s: %v", composeFile, err)
	}
	imgs := images(t)

	// etcd members: named by their service, flags parsed by etcd's own
	// definitions, each one listing every other.
	members := map[string]int{} // service -> client port
	var wantCluster []string
	for name, svc := range spec.Services {
		if imgs[svc.Image] != "etcd" {
			continue
		}
		fs, err := etcdFlags(svc.Command)
		if err != nil {
			t.Fatalf("service %s: %v", name, err)
		}
		adv, err := urlPorts(fs["advertise-client-urls"])
		if err != nil || len(adv) != 1 || adv[0][0] != name {
			t.Errorf("service %s: --advertise-client-urls=%v, want one URL on host %s", name, adv, name)
			continue
		}
		members[name], _ = strconv.Atoi(adv[0][1])
		peer, err := urlPorts(fs["initial-advertise-peer-urls"])
		if err != nil || len(peer) != 1 || peer[0][0] != name {
			t.Errorf("service %s: --initial-advertise-peer-urls=%v, want one URL on host %s", name, peer, name)
			continue
		}
		wantCluster = append(wantCluster, fmt.Sprintf("%s=http://%s:%s", fs["name"], name, peer[0][1]))
	}
	if len(members) != 3 {
		t.Fatalf("%d etcd members, want 3", len(members))
	}
	slices.Sort(wantCluster)
	for name, svc := range spec.Services {
		if _, ok := members[name]; !ok {
			continue
		}
		fs, _ := etcdFlags(svc.Command)
		got := strings.Split(fs["initial-cluster"], ",")
		slices.Sort(got)
		if !slices.Equal(got, wantCluster) {
			t.Errorf("service %s: --initial-cluster %v, want %v", name, got, wantCluster)
		}
	}

	for name, svc := range spec.Services {
		if _, ok := imgs[svc.Image]; !ok {
			t.Errorf("service %s: image %q is not one `mage docker:build` makes", name, svc.Image)
		}
		h, ok := serviceHelp(t, imgs[svc.Image])
		if !ok {
			continue
		}
		where := "service " + name
		env := map[string]string{}
		for k, v := range svc.Environment {
			if env[k], err = defaults(v); err != nil {
				t.Errorf("%s: %s: %v", where, k, err)
			}
		}
		checkEnvNames(t, where, h, env, "")
		for ep := range strings.SplitSeq(h.value(env, "etcd-endpoints"), ",") {
			host, port, err := splitHostPort(ep)
			if err != nil || members[host] != port {
				t.Errorf("%s: etcd endpoint %q is not an etcd member's client address (%v)", where, ep, members)
			}
		}
		if _, listens := h.defaults["listen"]; !listens {
			continue
		}
		checkComposeServer(t, where, svc, h, env, spec)
	}
}

// checkComposeServer: a server advertises a name that exists only on a
// network etcd is not on, so that cutting it off from etcd leaves it
// reachable, and Compose gives it time to stop the way pkg/serve does.
func checkComposeServer(t *testing.T, where string, svc composeService, h binaryHelp, env map[string]string, spec composeSpec) {
	t.Helper()
	_, port, err := splitHostPort(h.value(env, "listen"))
	if err != nil {
		t.Fatalf("%s: listen: %v", where, err)
	}
	host, aport, err := splitHostPort(h.value(env, "advertise"))
	if err != nil || aport != port {
		t.Errorf("%s: advertises %q, want a name on the app network and port %d", where, h.value(env, "advertise"), port)
	}
	nets, err := svc.networks()
	if err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	etcdNets := map[string]bool{}
	for _, other := range spec.Services {
		if other.Image == deployments.Image("etcd") {
			n, _ := other.networks()
			for k := range n {
				etcdNets[k] = true
			}
		}
	}
	var on []string
	for n, aliases := range nets {
		if slices.Contains(aliases, host) {
			on = append(on, n)
		}
	}
	if len(on) != 1 || etcdNets[on[0]] {
		t.Errorf("%s: advertised host %q is an alias on networks %v; want exactly one network, without etcd on it (etcd is on %v)", where, host, on, slices.Sorted(maps.Keys(etcdNets)))
	}
	stop := serve.RevokeTimeout + h.duration(t, env, "drain-delay") + h.duration(t, env, "stop-timeout")
	grace, err := time.ParseDuration(svc.StopGracePeriod)
	if err != nil || grace <= stop {
		t.Errorf("%s: stop_grace_period %q, want more than revoke bound + DRAIN_DELAY + STOP_TIMEOUT = %v", where, svc.StopGracePeriod, stop)
	}
}

// TestCompose runs the Compose stack under load and breaks it: it kills
// the etcd leader, cuts a greeter off from etcd (not from clients) until
// its lease expires, then reconnects it, and stops another greeter. No call
// may fail, and every greeter that runs must be registered again.
func TestCompose(t *testing.T) {
	// The compose CLI that `mage compose:test` found: `docker compose` or
	// `docker-compose`.
	cmd := strings.Fields(os.Getenv("ROLLCALL_COMPOSE"))
	if len(cmd) == 0 {
		t.Skip("needs a Docker engine, the images of `mage docker:build` and ROLLCALL_COMPOSE: run `go run mage.go compose:test`")
	}
	// Reading the images' IDs makes Go's test cache run this test again
	// when an image changes.
	ids, err := os.ReadFile(filepath.Join("..", "bin", "linux", "images.txt"))
	if err != nil {
		t.Fatalf("the images' IDs, which `go run mage.go docker:build` writes: %v", err)
	}
	t.Logf("images:\n%s", ids)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	s := &stack{
		t: t, cmd: cmd, start: time.Now(), ids: map[string]string{},
		project: fmt.Sprintf("rollcall-test-%d-%d", os.Getpid(), time.Now().UnixNano()%1e9),
		env: append(os.Environ(),
			"REGISTER_TTL=3s", // a cut-off greeter's key expires within seconds
			"CLIENT_MODE=load", "CLIENT_VIEW=lines", "CLIENT_POLICY=rollcall_p2c_ewma",
			// A few workers on half a CPU: load that leaves most of a
			// small machine to etcd and the greeters. A deadline with room
			// for a busy machine; a call to a dead instance is retried
			// well within it.
			"CLIENT_CONCURRENCY=4", "CLIENT_CPUS=0.5", "CLIENT_TIMEOUT=3s",
		),
	}
	t.Cleanup(s.down)

	greeters := []string{"greeter-1", "greeter-2", "greeter-3"}
	s.compose(ctx, "up", "--detach", "etcd-1", "etcd-2", "etcd-3", "greeter-1", "greeter-2", "greeter-3")
	for _, name := range append([]string{"etcd-1", "etcd-2", "etcd-3"}, greeters...) {
		s.ids[name] = s.compose(ctx, "ps", "-q", name)
	}
	s.connectEtcd(ctx)
	s.await(ctx, "every greeter registered", time.Minute, func(ctx context.Context) error { return s.registered(ctx, greeters...) })

	s.compose(ctx, "up", "--detach", "--no-deps", "client")
	s.ids["client"] = s.compose(ctx, "ps", "-q", "client")
	s.awaitCalls(ctx, "client calling", 500)

	// The etcd leader dies: the others elect a new one; it comes back.
	leader, leaderID := s.etcdLeader(ctx)
	s.logf("killing the etcd leader, %s", leader)
	s.docker(ctx, "kill", s.ids[leader])
	s.await(ctx, "a new etcd leader", time.Minute, func(ctx context.Context) error {
		name, id, err := s.leaderAmong(ctx, leader)
		if err == nil && id == leaderID {
			err = fmt.Errorf("%s still reports %s as leader", name, leader)
		}
		return err
	})
	s.awaitCalls(ctx, "calls go on", 500)
	s.docker(ctx, "start", s.ids[leader])
	s.connectEtcd(ctx) // its published port changed
	s.await(ctx, leader+" back in the cluster", time.Minute, func(ctx context.Context) error {
		st, err := s.status(ctx, leader)
		if err == nil && st.Leader == 0 {
			err = errors.New("no leader known")
		}
		return err
	})

	// greeter-1 loses etcd but not its clients: its lease expires, and it
	// registers again once etcd is reachable.
	etcdNet := strings.TrimSpace(s.docker(ctx, "network", "ls", "--quiet",
		"--filter", "label=com.docker.compose.project="+s.project, "--filter", "label=com.docker.compose.network=etcd"))
	if etcdNet == "" || strings.Contains(etcdNet, "\n") {
		t.Fatalf("want one etcd network of project %s, found %q", s.project, etcdNet)
	}
	s.logf("disconnecting greeter-1 from the etcd network")
	s.docker(ctx, "network", "disconnect", etcdNet, s.ids["greeter-1"])
	s.await(ctx, "greeter-1's lease expired", time.Minute, func(ctx context.Context) error {
		if err := s.registered(ctx, "greeter-1"); err == nil {
			return errors.New("greeter-1 still registered")
		}
		return s.registered(ctx, "greeter-2", "greeter-3")
	})
	s.awaitCalls(ctx, "calls go on without greeter-1", 500)
	s.logf("reconnecting greeter-1 to the etcd network")
	s.docker(ctx, "network", "connect", etcdNet, s.ids["greeter-1"])
	s.await(ctx, "every greeter registered again", time.Minute, func(ctx context.Context) error { return s.registered(ctx, greeters...) })
	// The next progress line: greeter-1's share of the calls by about now.
	back := s.awaitCalls(ctx, "calls go on", 1)

	// greeter-3 stops (SIGTERM): it deregisters, drains and exits 0.
	s.logf("stopping greeter-3")
	begin := time.Now()
	s.docker(ctx, "stop", "--time", "30", s.ids["greeter-3"])
	s.logf("greeter-3 stopped in %v", time.Since(begin).Round(time.Millisecond))
	if code := strings.TrimSpace(s.docker(ctx, "inspect", "--format", "{{.State.ExitCode}}", s.ids["greeter-3"])); code != "0" {
		t.Errorf("greeter-3 exited with code %s, want 0", code)
	}
	s.await(ctx, "greeter-3 deregistered", 10*time.Second, func(ctx context.Context) error {
		if err := s.registered(ctx, "greeter-3"); err == nil {
			return errors.New("greeter-3 still registered")
		}
		return s.registered(ctx, "greeter-1", "greeter-2")
	})
	// Enough calls since greeter-1 came back to tell that it gets its share.
	s.awaitCalls(ctx, "calls go on", max(2000, back.calls/5))

	s.logf("stopping the client")
	s.docker(ctx, "stop", "--time", "30", s.ids["client"])
	sum := s.summary(ctx)
	s.logf("client summary: %d calls, %d errors, codes %v", sum.Calls, sum.Errors, sum.Codes)
	if sum.Errors != 0 || len(sum.Codes) != 1 || sum.Codes["OK"] != sum.Calls || sum.Calls == 0 {
		t.Errorf("lost calls: %d of %d failed, codes %v", sum.Errors, sum.Calls, sum.Codes)
	}
	calls := map[string]int{}
	for _, row := range sum.Instances {
		calls[row.Instance] = row.Calls
	}
	for _, g := range greeters {
		if calls[g] == 0 {
			t.Errorf("%s answered no call: %v", g, calls)
		}
	}
	// The progress line gives greeter-1's share as a rounded percentage:
	// this bounds the calls it had answered when it registered again.
	before := int(math.Ceil((back.shares["greeter-1"] + 0.5) / 100 * float64(back.calls)))
	s.logf("greeter-1 answered %d calls in all, at most %d before it registered again", calls["greeter-1"], before)
	if calls["greeter-1"] <= before {
		t.Errorf("greeter-1 answered no call after it registered again: %d in all, up to %d before", calls["greeter-1"], before)
	}
}

// stack is one Compose project of the test, with its etcd client.
type stack struct {
	t       *testing.T
	cmd     []string // the compose CLI
	project string
	env     []string
	start   time.Time
	ids     map[string]string // service -> container ID
	etcd    *clientv3.Client
	eps     map[string]string // etcd service -> host:port published on 127.0.0.1
}

func (s *stack) logf(format string, args ...any) {
	s.t.Helper()
	s.t.Logf("%5.1fs "+format, append([]any{time.Since(s.start).Seconds()}, args...)...)
}

// compose runs the compose CLI on the test's project and returns its
// standard output, trimmed; a failure ends the test.
func (s *stack) compose(ctx context.Context, args ...string) string {
	s.t.Helper()
	out, err := run(ctx, s.env, s.cmd[0], slices.Concat(s.cmd[1:], []string{"-p", s.project, "-f", composeFile}, args)...)
	if err != nil {
		s.t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// docker runs the docker CLI; a failure ends the test.
func (s *stack) docker(ctx context.Context, args ...string) string {
	s.t.Helper()
	out, err := run(ctx, nil, "docker", args...)
	if err != nil {
		s.t.Fatal(err)
	}
	return out
}

func run(ctx context.Context, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// down removes everything the project made, even after a failure, and
// checks that nothing is left. After a failure it first logs the tail of
// every container's output.
func (s *stack) down() {
	if s.etcd != nil {
		s.etcd.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	base := slices.Concat(s.cmd[1:], []string{"-p", s.project, "-f", composeFile})
	if s.t.Failed() {
		out, _ := run(ctx, s.env, s.cmd[0], append(base, "logs", "--no-color", "--tail", "40")...)
		s.t.Logf("last lines of every container:\n%s", out)
	}
	if _, err := run(ctx, s.env, s.cmd[0], append(base, "down", "--volumes", "--remove-orphans", "--timeout", "5")...); err != nil {
		s.t.Errorf("clean up: %v", err)
	}
	label := "label=com.docker.compose.project=" + s.project
	for _, list := range [][]string{
		{"ps", "--all", "--quiet", "--filter", label},
		{"network", "ls", "--quiet", "--filter", label},
		{"volume", "ls", "--quiet", "--filter", label},
	} {
		if out, err := run(ctx, nil, "docker", list...); err != nil || strings.TrimSpace(out) != "" {
			s.t.Errorf("after clean-up, docker %s: %q %v", strings.Join(list, " "), out, err)
		}
	}
}

// await polls cond until it returns nil, or fails the test after timeout
// with cond's last error.
func (s *stack) await(ctx context.Context, what string, timeout time.Duration, cond func(context.Context) error) {
	s.t.Helper()
	begin := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		// A busy machine may take seconds to answer a docker command.
		callCtx, callCancel := context.WithTimeout(ctx, 10*time.Second)
		err := cond(callCtx)
		callCancel()
		if err == nil {
			s.logf("%s (after %v)", what, time.Since(begin).Round(time.Millisecond))
			return
		}
		if errors.Is(err, errStop) {
			s.t.Fatalf("waiting for %s: %v", what, err)
		}
		select {
		case <-ctx.Done():
			s.t.Fatalf("waiting for %s: still not after %v: %v", what, timeout, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// errStop makes await give up at once.
var errStop = errors.New("stop waiting")

// connectEtcd (re)points the test's etcd client at each member's port as
// published now.
func (s *stack) connectEtcd(ctx context.Context) {
	s.t.Helper()
	s.eps = map[string]string{}
	for _, name := range []string{"etcd-1", "etcd-2", "etcd-3"} {
		out := s.docker(ctx, "port", s.ids[name], "2379/tcp")
		s.eps[name] = strings.TrimSpace(strings.Split(strings.TrimSpace(out), "\n")[0])
	}
	eps := slices.Collect(maps.Values(s.eps))
	if s.etcd != nil {
		s.etcd.SetEndpoints(eps...)
		return
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		s.t.Fatal(err)
	}
	s.etcd = cli
}

func (s *stack) status(ctx context.Context, member string) (*clientv3.StatusResponse, error) {
	return s.etcd.Status(ctx, s.eps[member])
}

// etcdLeader returns the leader's service name and member ID, as the
// members themselves report it.
func (s *stack) etcdLeader(ctx context.Context) (string, uint64) {
	s.t.Helper()
	var name string
	var id uint64
	s.await(ctx, "an etcd leader", time.Minute, func(ctx context.Context) error {
		var err error
		name, id, err = s.leaderAmong(ctx, "")
		return err
	})
	return name, id
}

// leaderAmong asks every member but skip for its status, and returns the
// leader they all report.
func (s *stack) leaderAmong(ctx context.Context, skip string) (string, uint64, error) {
	ids := map[uint64]string{}
	leaders := map[uint64]bool{}
	for name := range s.eps {
		if name == skip {
			continue
		}
		st, err := s.status(ctx, name)
		if err != nil {
			return "", 0, fmt.Errorf("status of %s: %w", name, err)
		}
		ids[st.Header.MemberId] = name
		leaders[st.Leader] = true
	}
	if len(leaders) != 1 || leaders[0] {
		return "", 0, fmt.Errorf("members report leaders %x", slices.Collect(maps.Keys(leaders)))
	}
	leader := slices.Collect(maps.Keys(leaders))[0]
	name, ok := ids[leader]
	if !ok {
		return "", 0, fmt.Errorf("leader %x is not among the members asked", leader)
	}
	return name, leader, nil
}

// registered returns nil when every instance in ids is registered.
func (s *stack) registered(ctx context.Context, ids ...string) error {
	prefix := discovery.Prefix(discovery.DefaultNamespace, "greeter")
	resp, err := s.etcd.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("list %s: %w", prefix, err)
	}
	have := map[string]bool{}
	for _, kv := range resp.Kvs {
		inst, err := discovery.Decode(discovery.DefaultNamespace, "greeter", string(kv.Key), kv.Value)
		if err != nil {
			return fmt.Errorf("%w: %w", errStop, err)
		}
		have[inst.ID] = true
	}
	for _, id := range ids {
		if !have[id] {
			return fmt.Errorf("%s is not registered (registered: %v)", id, slices.Sorted(maps.Keys(have)))
		}
	}
	return nil
}

// progress is the client's latest "spread:" line.
type progress struct {
	calls, errors int
	shares        map[string]float64 // instance -> rounded percentage
	line          string
}

var (
	spreadTotals = regexp.MustCompile(`calls (\d+), errors (\d+)`)
	spreadShare  = regexp.MustCompile(`(\S+) [█·]+\s+(\d+)%`)
)

// progress reads the client's latest progress line (one a second).
func (s *stack) progress(ctx context.Context) (progress, error) {
	out, err := run(ctx, nil, "docker", "logs", "--tail", "20", s.ids["client"])
	if err != nil {
		return progress{}, err
	}
	var p progress
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		m := spreadTotals.FindStringSubmatch(line)
		if !strings.HasPrefix(line, "spread:") || m == nil {
			continue
		}
		p = progress{line: line, shares: map[string]float64{}}
		p.calls, _ = strconv.Atoi(m[1])
		p.errors, _ = strconv.Atoi(m[2])
		for _, sm := range spreadShare.FindAllStringSubmatch(line, -1) {
			p.shares[sm[1]], _ = strconv.ParseFloat(sm[2], 64)
		}
	}
	if p.line == "" {
		return p, errors.New("no progress line from the client yet")
	}
	return p, nil
}

// awaitCalls waits until the client has made more calls than when it
// started waiting, and stops the test as soon as one call fails. It
// returns the progress line that showed them.
func (s *stack) awaitCalls(ctx context.Context, what string, more int) progress {
	s.t.Helper()
	from := -1
	var last progress
	s.await(ctx, fmt.Sprintf("%s: %d more calls", what, more), time.Minute, func(ctx context.Context) error {
		p, err := s.progress(ctx)
		if err != nil {
			return err
		}
		if p.errors > 0 {
			return fmt.Errorf("%w: calls failed: %s", errStop, p.line)
		}
		if from < 0 {
			from = p.calls
		}
		if p.calls < from+more {
			return fmt.Errorf("%d calls so far", p.calls)
		}
		last = p
		return nil
	})
	return last
}

// clientSummary is the JSON line the client prints when it stops in load
// mode (services/client/internal/stats.Summary).
type clientSummary struct {
	Calls     int            `json:"calls"`
	Errors    int            `json:"errors"`
	Codes     map[string]int `json:"codes"`
	Instances []struct {
		Instance string `json:"instance"`
		Calls    int    `json:"calls"`
	} `json:"instances"`
}

func (s *stack) summary(ctx context.Context) clientSummary {
	s.t.Helper()
	if code := strings.TrimSpace(s.docker(ctx, "inspect", "--format", "{{.State.ExitCode}}", s.ids["client"])); code != "0" {
		s.t.Errorf("client exited with code %s, want 0", code)
	}
	out := s.docker(ctx, "logs", "--tail", "50", s.ids["client"])
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], "{") {
			var sum clientSummary
			if err := json.Unmarshal([]byte(lines[i]), &sum); err != nil {
				s.t.Fatalf("client summary %q: %v", lines[i], err)
			}
			return sum
		}
	}
	s.t.Fatalf("no JSON summary in the client's output:\n%s", out)
	return clientSummary{}
}
