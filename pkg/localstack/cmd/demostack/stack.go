package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/rollcall/rollcall/pkg/localstack"
)

// runDir holds what a local stack writes: etcd's data, PIDs, logs, the
// control socket.
const runDir = ".run"

// stack is etcd, greeters and the client of up and the demos, each in its
// own process group so that Ctrl-C reaches only this command, which then
// stops them in order: client, greeters, etcd.
type stack struct {
	*localstack.Stack
	etcd string // client endpoint, host:port
	cli  *clientv3.Client
	tls  struct{ greeter, client []string } // each side's environment for mutual TLS
	xds  bool                               // the client calls through the xDS control plane (XDS=1)
	// live, when set, is the live view: the client reports JSON snapshots
	// to it, and the stack's lines and process exits become its events.
	live  *tea.Program
	exits sync.WaitGroup // the goroutines that report exits

	mu       sync.Mutex
	greeters int                           // number of the last greeter started
	stopped  map[*localstack.Process]bool  // stopped by the stack: their exits are planned
	answers  map[string]time.Time          // instance -> when the client saw its first answer
	waiters  map[string][]chan<- time.Time // instance -> awaiting its first answer
}

// stackConfig is how a stack writes and shows what it does.
type stackConfig struct {
	out  io.Writer    // every process's prefixed lines and the stack's own
	live *tea.Program // the live view, or nil for lines only
}

// bringUp starts etcd (unless ETCD_ENDPOINTS names one) and n greeters,
// returning once every greeter is registered.
func bringUp(ctx context.Context, n int, cfg stackConfig) (s *stack, err error) {
	ls, err := localstack.New(localstack.Config{LogDir: filepath.Join(runDir, "logs"), Output: cfg.out,
		PIDFile: filepath.Join(runDir, "pids"), KillOnExit: true})
	if err != nil {
		return nil, fmt.Errorf("%w: stop it with `go run mage.go down`", err)
	}
	s = &stack{Stack: ls, live: cfg.live, stopped: map[*localstack.Process]bool{},
		answers: map[string]time.Time{}, waiters: map[string][]chan<- time.Time{}}
	defer func() {
		if err != nil {
			s.stopAll()
		}
	}()
	if ep := os.Getenv("ETCD_ENDPOINTS"); ep != "" {
		first, _, _ := strings.Cut(ep, ",")
		s.etcd = strings.TrimPrefix(strings.TrimPrefix(first, "http://"), "https://")
		s.Say("using etcd at %s (ETCD_ENDPOINTS)", s.etcd)
		s.send(etcdMsg(s.etcd))
	} else {
		etcd, err := s.StartEtcd(ctx, localstack.EtcdConfig{Binary: "bin/etcd", DataDir: filepath.Join(runDir, "etcd")})
		if err != nil {
			return s, err
		}
		s.etcd = etcd.Endpoints()[0]
		for _, m := range etcd.Members() {
			s.watchExit(m.Process())
		}
		s.Say("etcd serving on %s, data in %s", s.etcd, filepath.Join(runDir, "etcd"))
		s.send(etcdMsg(s.etcd))
	}
	if s.cli, err = clientv3.New(clientv3.Config{Endpoints: []string{s.etcd}, Logger: zap.NewNop()}); err != nil {
		return s, err
	}
	if os.Getenv("TLS") != "" {
		if err := s.makeCerts(); err != nil {
			return s, err
		}
	}
	var keys []string
	for range n {
		p, err := s.startGreeter()
		if err != nil {
			return s, err
		}
		keys = append(keys, "rollcall/greeter/"+p.Name)
	}
	// The client starts once every greeter is in etcd, so that its first
	// call is answered rather than told no instance is registered.
	if _, err = s.awaitKeys(ctx, true, keys...); err == nil && os.Getenv("XDS") != "" {
		err = s.startControlPlane(ctx)
	}
	return s, err
}

// Say writes a line of the stack's own to its output and, in the live
// view, to its events.
func (s *stack) Say(format string, args ...any) {
	s.Stack.Say(format, args...)
	s.send(eventMsg{At: time.Now(), Text: fmt.Sprintf(format, args...)})
}

// send hands msg to the live view, if there is one.
func (s *stack) send(msg tea.Msg) {
	if s.live != nil {
		s.live.Send(msg)
	}
}

// startControlPlane starts the xDS control plane (services/xds) and has
// the client call through it (XDS=1).
func (s *stack) startControlPlane(ctx context.Context) error {
	addr, err := localstack.FreePort()
	if err != nil {
		return err
	}
	if _, err := s.start("xds", "xds", []string{"-listen", addr, "-id", "xds-1", "-services", "greeter"}, nil, nil); err != nil {
		return err
	}
	s.xds = true
	_, err = s.awaitKeys(ctx, true, "rollcall/xds/xds-1")
	return err
}

// makeCerts writes a throwaway CA and certificates to .run/tls and turns
// mutual TLS on between the client and the greeters (TLS=1).
func (s *stack) makeCerts() error {
	dir, err := filepath.Abs(filepath.Join(runDir, "tls"))
	if err != nil {
		return err
	}
	c, err := localstack.MakeCerts(dir, "client", "greeter")
	if err != nil {
		return err
	}
	g := c.Servers["greeter"]
	s.tls.greeter = []string{"TLS_CERT=" + g.CertFile, "TLS_KEY=" + g.KeyFile, "TLS_CLIENT_CA=" + c.CAFile}
	s.tls.client = []string{"CALL_TLS_CA=" + c.CAFile, "CALL_TLS_CERT=" + c.Client.CertFile, "CALL_TLS_KEY=" + c.Client.KeyFile}
	s.Say("mutual TLS between the client and the greeters, certificates in %s", dir)
	return nil
}

// start runs bin/binary as name with the stack's etcd in its environment.
func (s *stack) start(name, binary string, args, env []string, tap func(string) bool) (*localstack.Process, error) {
	metrics, err := localstack.FreePort()
	if err != nil {
		return nil, err
	}
	env = append(append(os.Environ(), "ETCD_ENDPOINTS="+s.etcd, "LOG_FORMAT=text"), env...)
	p, err := s.Start(localstack.Command{Name: name, Path: filepath.Join("bin", binary),
		Args: append(args, "-metrics-listen", metrics), Env: env, Metrics: metrics, Tap: tap})
	if err != nil {
		return nil, err
	}
	s.watchExit(p)
	s.send(procMsg{Name: p.Name, PID: p.PID(), State: procRunning})
	return p, nil
}

// startGreeter starts the next greeter instance on a free port.
func (s *stack) startGreeter() (*localstack.Process, error) {
	name, args, err := s.nextGreeter()
	if err != nil {
		return nil, err
	}
	return s.start(name, "greeter", args, s.tls.greeter, nil)
}

// nextGreeter names the next greeter instance and returns its flags. Its
// port comes from FreePort, as every port the stack hands out: one on
// 127.0.0.1:0 could be a port FreePort gave another process, which had
// not bound it yet.
func (s *stack) nextGreeter() (name string, args []string, err error) {
	s.mu.Lock()
	s.greeters++
	name = fmt.Sprintf("greeter-%d", s.greeters)
	s.mu.Unlock()
	addr, err := localstack.FreePort()
	if err != nil {
		return "", nil, err
	}
	return name, []string{"-listen", addr, "-id", name}, nil
}

// runningGreeters lists the greeters that run, in the order they started.
func (s *stack) runningGreeters() []*localstack.Process {
	var running []*localstack.Process
	for _, p := range s.Processes() {
		if strings.HasPrefix(p.Name, "greeter-") && p.Running() {
			running = append(running, p)
		}
	}
	return running
}

// startClient starts the demo client. It balances with round_robin so
// the demo shows calls going to each instance in turn; services use
// rollcall's load-aware default (CLIENT_POLICY overrides). A client
// restarted while etcd is down starts from the last list it saw, in
// .run/snapshots. For the live view it reports JSON snapshots instead of
// a line per call.
func (s *stack) startClient(args ...string) (*localstack.Process, error) {
	view := "lines"
	if s.live != nil {
		view = "json"
	}
	args = append([]string{"-view", view, "-policy", clientPolicy(), "-snapshot-dir", filepath.Join(runDir, "snapshots")}, args...)
	if s.xds {
		args = append(args, "-xds")
	}
	return s.start("client", "client", args, s.tls.client, s.tapClient)
}

// clientPolicy is the demo client's balancing policy.
func clientPolicy() string {
	if p := os.Getenv("CLIENT_POLICY"); p != "" {
		return p
	}
	return "round_robin"
}

// answeredBy finds the instance in a line of the client's lines view:
// "call 7: Hello rollcall from greeter-2 (127.0.0.1:40539)  (684µs)".
var answeredBy = regexp.MustCompile(`^call \d+: .* from (\S+) \(`)

// tapClient reads the client's lines: who answered, and in the live view
// the snapshots, which it hands to the view rather than to the output.
func (s *stack) tapClient(line string) bool {
	if m := answeredBy.FindStringSubmatch(line); m != nil {
		s.answered(m[1], time.Now())
		return true
	}
	if s.live == nil || !strings.HasPrefix(line, "{") {
		return true
	}
	snap, err := parseSnapshot(line)
	if err != nil {
		return true // not a snapshot: let it reach the log
	}
	for _, in := range snap.Instances {
		if in.FirstCall != nil {
			s.answered(in.ID, *in.FirstCall)
		}
	}
	s.send(snap)
	return false
}

// answered records the first answer of instance, at, waking its waiters.
func (s *stack) answered(instance string, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.answers[instance]; ok {
		return
	}
	s.answers[instance] = at
	for _, ch := range s.waiters[instance] {
		ch <- at
	}
	delete(s.waiters, instance)
}

// awaitAnswer returns a channel that receives when the client saw the
// first answer of instance, at once if it already did.
func (s *stack) awaitAnswer(instance string) <-chan time.Time {
	ch := make(chan time.Time, 1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if at, ok := s.answers[instance]; ok {
		ch <- at
		return ch
	}
	s.waiters[instance] = append(s.waiters[instance], ch)
	return ch
}

// watchExit reports how p ends: killed by a signal the stack did not send
// (kill -9 by a demo or by hand), or exited by itself with an error.
func (s *stack) watchExit(p *localstack.Process) {
	s.exits.Go(func() {
		<-p.Done()
		s.mu.Lock()
		planned := s.stopped[p]
		s.mu.Unlock()
		state := procStopped
		if sig, ok := p.ExitSignal(); ok && !planned {
			state = procKilled
			s.Say("%s (pid %d) was killed by %s", p.Name, p.PID(), signalName(sig))
		} else if err := p.Wait(); err != nil && !planned {
			state = procFailed
			s.Say("%s (pid %d) exited: %v", p.Name, p.PID(), err)
		}
		s.send(procMsg{Name: p.Name, PID: p.PID(), State: state})
	})
}

// signalName is the signal's conventional name, "SIGKILL".
func signalName(sig syscall.Signal) string {
	if name := unix.SignalName(sig); name != "" {
		return name
	}
	return sig.String()
}

// stop stops procs with sig, killing those still running after timeout;
// their exits are planned, not reported as kills.
func (s *stack) stop(sig syscall.Signal, timeout time.Duration, procs ...*localstack.Process) {
	s.mu.Lock()
	for _, p := range procs {
		s.stopped[p] = true
	}
	s.mu.Unlock()
	s.Stop(sig, timeout, procs...)
}

// awaitKeys waits up to 30 s until keys are registered (or gone).
func (s *stack) awaitKeys(ctx context.Context, present bool, keys ...string) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if present {
		return localstack.AwaitKeys(ctx, s.cli, keys...)
	}
	return localstack.AwaitKeysGone(ctx, s.cli, keys...)
}

// metricsSummary says where each process serves its metrics, in one line.
func (s *stack) metricsSummary() string {
	var where []string
	for _, p := range s.Processes() {
		if p.Metrics != "" && p.Running() {
			where = append(where, p.Name+" "+p.Metrics)
		}
	}
	return "Prometheus metrics at http://ADDR/metrics: " + strings.Join(where, ", ")
}

// stopAll stops the client, then the greeters together, then etcd, and
// waits for everything the stack started.
func (s *stack) stopAll() {
	var client, greeters, etcd []*localstack.Process
	for _, p := range s.Processes() {
		switch {
		case p.Name == "client":
			client = append(client, p)
		case strings.HasPrefix(p.Name, "etcd"):
			etcd = append(etcd, p)
		default:
			greeters = append(greeters, p)
		}
	}
	s.stop(syscall.SIGTERM, 5*time.Second, client...)
	s.stop(syscall.SIGTERM, 15*time.Second, greeters...)
	s.stop(syscall.SIGTERM, 10*time.Second, etcd...)
	if s.cli != nil {
		s.cli.Close()
	}
	s.stop(syscall.SIGKILL, time.Second, s.Processes()...)
	s.Close()
	s.exits.Wait()
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
