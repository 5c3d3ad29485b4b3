package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// runDir holds what a local stack writes: etcd's data, PIDs, detached logs.
const runDir = ".run"

// proc is one process of the local stack.
type proc struct {
	name    string
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited and its output is drained
	metrics string        // host:port of its Prometheus /metrics, if any; guarded by stack.mu
}

// stack runs etcd, greeters and the client as child processes, each in its
// own process group so that Ctrl-C reaches only mage, which then stops them
// in order: client, greeters, etcd.
type stack struct {
	detached bool
	etcd     string // client endpoint, host:port

	mu      sync.Mutex
	procs   []*proc
	onLine  func(name, line string)
	outMu   sync.Mutex
	greeter int // number of the last greeter started
	tlsEnv  tlsEnv
}

func newStack(detached bool) (*stack, error) {
	if err := os.MkdirAll(filepath.Join(runDir, "logs"), 0o755); err != nil {
		return nil, err
	}
	return &stack{detached: detached}, nil
}

// buildBinaries builds etcd (pinned by the pkg module, the same version as
// the client library), the greeter and the client into bin/.
func buildBinaries() error {
	if _, err := os.Stat("bin/etcd"); err != nil {
		fmt.Println("building etcd, greeter and client (first run only: about two minutes on two cores)...")
	} else {
		fmt.Println("building greeter and client...")
	}
	abs, err := filepath.Abs("bin")
	if err != nil {
		return err
	}
	if err := runIn("pkg", nil, "go", "build", "-o", filepath.Join(abs, "etcd"), "go.etcd.io/etcd/server/v3"); err != nil {
		return err
	}
	for _, svc := range []string{"greeter", "client"} {
		if err := runIn("services/"+svc, nil, "go", "build", "-o", filepath.Join(abs, svc), "./cmd/"+svc); err != nil {
			return err
		}
	}
	return nil
}

// start runs bin/<binary> as name. Its output goes, a line at a time and
// prefixed with name, to the terminal (or to .run/logs/<name>.log when
// detached).
func (s *stack) start(name, binary string, args []string, env ...string) (*proc, error) {
	cmd := exec.Command(filepath.Join("bin", binary), args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	var out io.ReadCloser
	// etcd's own log is for debugging etcd, not for the demo: keep it in a file.
	if s.detached || name == "etcd" {
		f, err := os.Create(filepath.Join(runDir, "logs", name+".log"))
		if err != nil {
			return nil, err
		}
		defer f.Close()
		cmd.Stdout, cmd.Stderr = f, f
	} else {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		cmd.Stdout, cmd.Stderr = w, w
		out = r
		defer w.Close()
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	if err := s.savePIDs(); err != nil {
		return nil, err
	}
	go func() {
		if out != nil {
			s.copyLines(name, out)
		}
		cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (s *stack) copyLines(name string, r io.ReadCloser) {
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		s.outMu.Lock()
		fmt.Printf("%-10s| %s\n", name, line)
		s.outMu.Unlock()
		s.mu.Lock()
		hook := s.onLine
		s.mu.Unlock()
		if hook != nil {
			hook(name, line)
		}
	}
}

// say prints a line of mage's own, set apart from the processes' output.
func (s *stack) say(format string, args ...any) {
	s.outMu.Lock()
	defer s.outMu.Unlock()
	fmt.Printf("==> "+format+"\n", args...)
}

func (s *stack) savePIDs() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	for _, p := range s.procs {
		fmt.Fprintf(&b, "%s %d\n", p.name, p.cmd.Process.Pid)
	}
	return os.WriteFile(filepath.Join(runDir, "pids"), []byte(b.String()), 0o644)
}

// startEtcd starts etcd on free 127.0.0.1 ports with its data under .run/,
// and waits until it reports healthy.
func (s *stack) startEtcd(ctx context.Context) error {
	client, peer, err := freePort(), freePort(), error(nil)
	if client == "" || peer == "" {
		return errors.New("no free port on 127.0.0.1")
	}
	clientURL, peerURL := "http://"+client, "http://"+peer
	p, err := s.start("etcd", "etcd", []string{
		"--name", "rollcall", "--data-dir", filepath.Join(runDir, "etcd"),
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "rollcall=" + peerURL, "--log-level", "warn",
	})
	if err != nil {
		return err
	}
	s.etcd = client
	s.setMetrics(p, client) // etcd serves /metrics on its client port
	return s.awaitEtcd(ctx)
}

// awaitEtcd polls etcd's /health until it answers healthy, for 30 s.
func (s *stack) awaitEtcd(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.etcd+"/health", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if bytes.Contains(body, []byte(`"health":"true"`)) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("etcd at %s did not become healthy: %w", s.etcd, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// startGreeter starts the next greeter instance on a free port.
func (s *stack) startGreeter(extra ...string) (*proc, error) {
	s.mu.Lock()
	s.greeter++
	name := fmt.Sprintf("greeter-%d", s.greeter)
	s.mu.Unlock()
	metrics := freePort()
	args := append([]string{"-listen", "127.0.0.1:0", "-id", name, "-metrics-listen", metrics}, extra...)
	p, err := s.start(name, "greeter", args, append(s.env(), s.tlsEnv.greeter...)...)
	if err == nil {
		s.setMetrics(p, metrics)
	}
	return p, err
}

// startClient starts the demo client. It balances with round_robin so
// the demo shows calls going to each instance in turn; services use
// rollcall's load-aware default (CLIENT_POLICY overrides).
func (s *stack) startClient(args ...string) (*proc, error) {
	policy := os.Getenv("CLIENT_POLICY")
	if policy == "" {
		policy = "round_robin"
	}
	metrics := freePort()
	// Snapshots: a client restarted while etcd is down starts from the
	// last list it saw.
	p, err := s.start("client", "client", append([]string{"-view", "lines", "-policy", policy, "-metrics-listen", metrics,
		"-snapshot-dir", filepath.Join(".run", "snapshots")}, args...), append(s.env(), s.tlsEnv.client...)...)
	if err == nil {
		s.setMetrics(p, metrics)
	}
	return p, err
}

func (s *stack) setMetrics(p *proc, addr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p.metrics = addr
}

// metricsSummary says where each process serves its metrics, in one line.
func (s *stack) metricsSummary() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var where []string
	for _, p := range s.procs {
		if p.metrics != "" {
			where = append(where, p.name+" "+p.metrics)
		}
	}
	return "Prometheus metrics at http://ADDR/metrics: " + strings.Join(where, ", ")
}

// tlsEnv is each side's environment for mutual TLS, empty when off.
type tlsEnv struct{ greeter, client []string }

// makeCerts writes a throwaway CA and certificates to .run/tls and turns
// mutual TLS on between the client and the greeters (TLS=1).
func (s *stack) makeCerts() error {
	dir, err := filepath.Abs(filepath.Join(runDir, "tls"))
	if err != nil {
		return err
	}
	if err := runIn("pkg", nil, "go", "run", "./devcerts/cmd/devcerts", "-dir", dir, "-client", "client", "greeter"); err != nil {
		return fmt.Errorf("make certificates: %w", err)
	}
	file := func(name string) string { return filepath.Join(dir, name) }
	s.tlsEnv = tlsEnv{
		greeter: []string{"TLS_CERT=" + file("greeter.pem"), "TLS_KEY=" + file("greeter-key.pem"), "TLS_CLIENT_CA=" + file("rollcall-dev-ca.pem")},
		client:  []string{"CALL_TLS_CA=" + file("rollcall-dev-ca.pem"), "CALL_TLS_CERT=" + file("client.pem"), "CALL_TLS_KEY=" + file("client-key.pem")},
	}
	s.say("mutual TLS between the client and the greeters, certificates in %s", dir)
	return nil
}

func (s *stack) env() []string {
	return []string{"ETCD_ENDPOINTS=" + s.etcd, "LOG_FORMAT=text"}
}

// stop sends sig to p's process group and waits for it to exit, killing it
// after timeout.
func (s *stack) stop(p *proc, sig syscall.Signal, timeout time.Duration) {
	syscall.Kill(-p.cmd.Process.Pid, sig)
	select {
	case <-p.done:
	case <-time.After(timeout):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// stopAll stops the client, then the greeters together, then etcd.
func (s *stack) stopAll() {
	s.mu.Lock()
	procs := append([]*proc(nil), s.procs...)
	s.mu.Unlock()
	var client, etcd *proc
	var greeters []*proc
	for _, p := range procs {
		switch {
		case p.name == "client":
			client = p
		case p.name == "etcd":
			etcd = p
		default:
			greeters = append(greeters, p)
		}
	}
	if client != nil {
		s.stop(client, syscall.SIGTERM, 5*time.Second)
	}
	var wg sync.WaitGroup
	for _, g := range greeters {
		wg.Go(func() { s.stop(g, syscall.SIGTERM, 15*time.Second) })
	}
	wg.Wait()
	if etcd != nil {
		s.stop(etcd, syscall.SIGTERM, 10*time.Second)
	}
	os.Remove(filepath.Join(runDir, "pids"))
}

// keys lists the keys under prefix through etcd's JSON gateway, so mage
// needs no etcd client library.
func (s *stack) keys(ctx context.Context, prefix string) ([]string, error) {
	end := []byte(prefix)
	end[len(end)-1]++
	body, _ := json.Marshal(map[string]any{
		"key": base64.StdEncoding.EncodeToString([]byte(prefix)), "range_end": base64.StdEncoding.EncodeToString(end), "keys_only": true,
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+s.etcd+"/v3/kv/range", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out struct{ Kvs []struct{ Key string } }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("etcd range: %w", err)
	}
	keys := make([]string, 0, len(out.Kvs))
	for _, kv := range out.Kvs {
		k, _ := base64.StdEncoding.DecodeString(kv.Key)
		keys = append(keys, string(k))
	}
	return keys, nil
}

// awaitKey polls etcd until key is present (or absent), returning when.
func (s *stack) awaitKey(ctx context.Context, key string, present bool, timeout time.Duration) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		keys, err := s.keys(ctx, key[:strings.LastIndex(key, "/")+1])
		if err == nil && containsString(keys, key) == present {
			return time.Now(), nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("key %s present=%v not reached in %v", key, !present, timeout)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func freePort() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return ""
	}
	defer l.Close()
	return l.Addr().String()
}

// envInt reads a positive integer setting from the environment.
func envInt(name string, def int) (int, error) {
	v := os.Getenv(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 100 {
		return 0, fmt.Errorf("invalid %s=%q: want a number from 1 to 100", name, v)
	}
	return n, nil
}
