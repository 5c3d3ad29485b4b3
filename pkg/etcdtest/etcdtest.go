// Package etcdtest runs a real etcd server for tests (and package
// examples, through StartExample): a process of the etcd binary built from
// the etcd server module this repository pins (once per machine, see
// [localstack.EtcdBinary]), on 127.0.0.1 ports picked free, stopped by PID
// when the test ends. A test can stop, restart, wipe or compact it to play
// failures. It is etcd itself, never a fake; a process rather than etcd
// embedded in the test binary, so that tests built with -race neither
// compile etcd's server with the race detector nor run it under it.
package etcdtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/localstack"
	"github.com/rollcall/rollcall/pkg/tlsfiles"
)

// Server is one etcd member. Its client URL stays the same across Stop,
// Start and Wipe, as a restarted etcd's would.
type Server struct {
	t     testing.TB // nil for a server of StartExample
	dir   string
	tls   *TLS
	stack *localstack.Stack
	etcd  *localstack.Etcd
}

// TLS is what a server started by StartTLS serves and trusts, as PEM files.
type TLS struct {
	// CA signs client certificates that etcd accepts (and, in tests, its
	// own certificate).
	CA string
	// Cert and Key are etcd's server certificate, for 127.0.0.1.
	Cert, Key string
	// ClientCert and ClientKey are what Client presents.
	ClientCert, ClientKey string
}

// Start starts etcd in a temporary directory and stops it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	return start(t, nil)
}

// StartTLS is Start with client connections over TLS, and a client
// certificate signed by tls.CA required of every client.
func StartTLS(t testing.TB, tls TLS) *Server {
	t.Helper()
	return start(t, &tls)
}

func start(t testing.TB, tls *TLS) *Server {
	t.Helper()
	s, err := newServer(t.TempDir(), tls)
	if err != nil {
		t.Fatal(err)
	}
	s.t = t
	t.Cleanup(func() { s.stack.Close() })
	s.Start()
	return s
}

// StartExample starts etcd for a package example, which has no
// testing.TB, in a new temporary directory; stop stops it and removes the
// directory. The methods that report failures to a test (Start, Restart,
// Wipe, Client, Compact) panic on a failure here.
func StartExample() (s *Server, stop func(), err error) {
	dir, err := os.MkdirTemp("", "etcdtest-")
	if err != nil {
		return nil, nil, fmt.Errorf("etcd data directory: %w", err)
	}
	s, err = newServer(dir, nil)
	if err == nil {
		err = s.start()
		if err != nil {
			s.stack.Close()
		}
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	return s, func() { s.stack.Close(); os.RemoveAll(dir) }, nil
}

// newServer returns a server not started yet, keeping its data and log in dir.
func newServer(dir string, tls *TLS) (*Server, error) {
	stack, err := localstack.New(localstack.Config{LogDir: dir, LogFiles: true, KillOnExit: true})
	if err != nil {
		return nil, err
	}
	return &Server{dir: dir, tls: tls, stack: stack}, nil
}

// fatalf fails the test, or panics for a server of StartExample.
func (s *Server) fatalf(format string, args ...any) {
	if s.t == nil {
		panic(fmt.Sprintf(format, args...))
	}
	s.t.Helper()
	s.t.Fatalf(format, args...)
}

// helper marks the caller as a test helper, when there is a test.
func (s *Server) helper() {
	if s.t != nil {
		s.t.Helper()
	}
}

func (s *Server) member() *localstack.EtcdMember { return s.etcd.Members()[0] }

// Endpoint is the address clients dial.
func (s *Server) Endpoint() string {
	if s.tls != nil {
		return "https://" + s.member().ClientAddr
	}
	return "http://" + s.member().ClientAddr
}

// Running reports whether the server is up.
func (s *Server) Running() bool { return s.etcd != nil && s.member().Process().Running() }

// Start starts a stopped server on its data directory and ports.
func (s *Server) Start() {
	s.helper()
	if err := s.start(); err != nil {
		s.fatalf("%v", err)
	}
}

func (s *Server) start() error {
	// The wait for a healthy etcd; StartEtcd and Restart wait 30 s at most.
	ctx := context.Background()
	if s.etcd != nil {
		if s.Running() {
			return nil
		}
		if err := s.etcd.Restart(ctx, s.member()); err != nil {
			return fmt.Errorf("restart etcd: %w", err)
		}
		return nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	bin, err := localstack.EtcdBinary(wd)
	if err != nil {
		return err
	}
	cfg := localstack.EtcdConfig{
		Binary: bin, DataDir: filepath.Join(s.dir, "data"),
		// At etcd's default cost, hashing a password takes long enough on
		// a busy machine that logins outlast the tests' deadlines; test
		// passwords need no strength.
		Args: []string{"--bcrypt-cost", "4"},
	}
	if t := s.tls; t != nil {
		client, err := tlsfiles.Files{CA: t.CA, Cert: t.ClientCert, Key: t.ClientKey}.Client()
		if err != nil {
			return fmt.Errorf("etcd client TLS: %w", err)
		}
		cfg.TLS = &localstack.EtcdTLS{Cert: t.Cert, Key: t.Key, CA: t.CA, Client: client}
	}
	e, err := s.stack.StartEtcd(ctx, cfg)
	if err != nil {
		return err
	}
	s.etcd = e
	return nil
}

// Stop stops the server, keeping its data.
func (s *Server) Stop() {
	if s.Running() {
		s.member().Process().Stop(syscall.SIGTERM, 10*time.Second)
	}
}

// Restart stops and starts the server on the same data.
func (s *Server) Restart() {
	s.helper()
	s.Stop()
	s.Start()
}

// Wipe replaces the server by an empty one on the same ports, as when an
// etcd cluster is lost and rebuilt: no keys, no leases, revisions from 1.
func (s *Server) Wipe() {
	s.helper()
	s.Stop()
	if err := os.RemoveAll(s.member().DataDir); err != nil {
		s.fatalf("wipe etcd data: %v", err)
	}
	s.Start()
}

// Client returns a client of this server, made as services make theirs,
// and closes it when the test ends (for a server of StartExample, the
// caller closes it).
func (s *Server) Client() *clientv3.Client {
	s.helper()
	cfg := clientv3.Config{Endpoints: []string{s.Endpoint()}, Logger: zap.NewNop()}
	if s.tls != nil {
		var err error
		cfg.TLS, err = tlsfiles.Files{CA: s.tls.CA, Cert: s.tls.ClientCert, Key: s.tls.ClientKey}.Client()
		if err != nil {
			s.fatalf("etcd client TLS: %v", err)
		}
	}
	c, err := discovery.NewEtcdClient(cfg)
	if err != nil {
		s.fatalf("etcd client: %v", err)
	}
	if s.t != nil {
		s.t.Cleanup(func() { c.Close() })
	}
	return c
}

// Compact compacts the server's history up to its current revision, so
// that watches resuming from an older revision fail with ErrCompacted.
func (s *Server) Compact(ctx context.Context) {
	s.helper()
	c := s.Client()
	resp, err := c.Get(ctx, "compact-probe")
	if err != nil {
		s.fatalf("read revision: %v", err)
	}
	if _, err := c.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		s.fatalf("compact: %v", err)
	}
}
