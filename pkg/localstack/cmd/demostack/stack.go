package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/rollcall/rollcall/pkg/localstack"
)

// runDir holds what a local stack writes: etcd's data, PIDs, detached logs.
const runDir = ".run"

// stack is etcd, greeters and the client of up and the demos, each in its
// own process group so that Ctrl-C reaches only this command, which then
// stops them in order: client, greeters, etcd.
type stack struct {
	*localstack.Stack
	etcd     string // client endpoint, host:port
	cli      *clientv3.Client
	greeters int                                // number of the last greeter started
	tls      struct{ greeter, client []string } // each side's environment for mutual TLS
	xds      bool                               // the client calls through the xDS control plane (XDS=1)
}

// bringUp starts etcd (unless ETCD_ENDPOINTS names one) and n greeters,
// returning once every greeter is registered.
func bringUp(ctx context.Context, n int, detached bool) (s *stack, err error) {
	ls, err := localstack.New(localstack.Config{LogDir: filepath.Join(runDir, "logs"), Output: os.Stdout, LogFiles: detached,
		PIDFile: filepath.Join(runDir, "pids"), KillOnExit: !detached})
	if err != nil {
		return nil, fmt.Errorf("%w: stop it with `go run mage.go down`", err)
	}
	s = &stack{Stack: ls}
	defer func() {
		if err != nil {
			s.stopAll()
		}
	}()
	if ep := os.Getenv("ETCD_ENDPOINTS"); ep != "" {
		first, _, _ := strings.Cut(ep, ",")
		s.etcd = strings.TrimPrefix(strings.TrimPrefix(first, "http://"), "https://")
		s.Say("using etcd at %s (ETCD_ENDPOINTS)", s.etcd)
	} else {
		etcd, err := s.StartEtcd(ctx, localstack.EtcdConfig{Binary: "bin/etcd", DataDir: filepath.Join(runDir, "etcd")})
		if err != nil {
			return s, err
		}
		s.etcd = etcd.Endpoints()[0]
		s.Say("etcd serving on %s, data in %s", s.etcd, filepath.Join(runDir, "etcd"))
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

// startControlPlane starts the xDS control plane (services/xds) and has
// the client call through it (XDS=1).
func (s *stack) startControlPlane(ctx context.Context) error {
	addr, err := localstack.FreePort()
	if err != nil {
		return err
	}
	if _, err := s.start("xds", "xds", []string{"-listen", addr, "-id", "xds-1", "-services", "greeter"}, nil); err != nil {
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
func (s *stack) start(name, binary string, args, env []string) (*localstack.Process, error) {
	metrics, err := localstack.FreePort()
	if err != nil {
		return nil, err
	}
	env = append(append(os.Environ(), "ETCD_ENDPOINTS="+s.etcd, "LOG_FORMAT=text"), env...)
	return s.Start(localstack.Command{Name: name, Path: filepath.Join("bin", binary),
		Args: append(args, "-metrics-listen", metrics), Env: env, Metrics: metrics})
}

// startGreeter starts the next greeter instance on a free port.
func (s *stack) startGreeter() (*localstack.Process, error) {
	s.greeters++
	name := fmt.Sprintf("greeter-%d", s.greeters)
	return s.start(name, "greeter", []string{"-listen", "127.0.0.1:0", "-id", name}, s.tls.greeter)
}

// startClient starts the demo client. It balances with round_robin so
// the demo shows calls going to each instance in turn; services use
// rollcall's load-aware default (CLIENT_POLICY overrides). A client
// restarted while etcd is down starts from the last list it saw, in
// .run/snapshots.
func (s *stack) startClient(args ...string) (*localstack.Process, error) {
	policy := os.Getenv("CLIENT_POLICY")
	if policy == "" {
		policy = "round_robin"
	}
	args = append([]string{"-view", "lines", "-policy", policy, "-snapshot-dir", filepath.Join(runDir, "snapshots")}, args...)
	if s.xds {
		args = append(args, "-xds")
	}
	return s.start("client", "client", args, s.tls.client)
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
		if p.Metrics != "" {
			where = append(where, p.Name+" "+p.Metrics)
		}
	}
	return "Prometheus metrics at http://ADDR/metrics: " + strings.Join(where, ", ")
}

// stopAll stops the client, then the greeters together, then etcd.
func (s *stack) stopAll() {
	var client, greeters, etcd []*localstack.Process
	for _, p := range s.Processes() {
		switch {
		case p.Name == "client":
			client = append(client, p)
		case p.Name == "etcd":
			etcd = append(etcd, p)
		default:
			greeters = append(greeters, p)
		}
	}
	s.Stop(syscall.SIGTERM, 5*time.Second, client...)
	s.Stop(syscall.SIGTERM, 15*time.Second, greeters...)
	s.Stop(syscall.SIGTERM, 10*time.Second, etcd...)
	if s.cli != nil {
		s.cli.Close()
	}
	s.Close()
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
