// Package etcdtest runs a real etcd server in-process for tests (and
// package examples, through StartExample), on 127.0.0.1 ports picked free,
// and lets a test stop, restart, wipe or compact it to play failures. It is
// etcd itself (server/v3/embed), never a fake.
package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"golang.org/x/crypto/bcrypt"

	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/tlsfiles"
)

// Server is one embedded etcd member. Its client URL stays the same across
// Stop, Start and Wipe, as a restarted etcd's would.
type Server struct {
	t         testing.TB // nil for a server of StartExample
	dir       string
	clientURL url.URL
	peerURL   url.URL
	etcd      *embed.Etcd
	tls       *TLS
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
	s, err := newServer(filepath.Join(t.TempDir(), "etcd"), tls)
	if err != nil {
		t.Fatal(err)
	}
	s.t = t
	s.Start()
	t.Cleanup(s.Stop)
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
	s, err = newServer(filepath.Join(dir, "etcd"), nil)
	if err == nil {
		err = s.start()
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	return s, func() { s.Stop(); os.RemoveAll(dir) }, nil
}

// newServer returns a stopped server on free ports, keeping its data in dir.
func newServer(dir string, tls *TLS) (*Server, error) {
	scheme := "http"
	if tls != nil {
		scheme = "https"
	}
	clientAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	peerAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	return &Server{
		dir:       dir,
		clientURL: url.URL{Scheme: scheme, Host: clientAddr},
		peerURL:   url.URL{Scheme: "http", Host: peerAddr},
		tls:       tls,
	}, nil
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

// Endpoint is the address clients dial.
func (s *Server) Endpoint() string { return s.clientURL.String() }

// Running reports whether the server is up.
func (s *Server) Running() bool { return s.etcd != nil }

// Start starts a stopped server on its data directory and ports.
func (s *Server) Start() {
	s.helper()
	if err := s.start(); err != nil {
		s.fatalf("%v", err)
	}
}

func (s *Server) start() error {
	if s.etcd != nil {
		return nil
	}
	cfg := embed.NewConfig()
	cfg.Name = "etcdtest"
	cfg.Dir = s.dir
	cfg.ListenClientUrls = []url.URL{s.clientURL}
	cfg.AdvertiseClientUrls = []url.URL{s.clientURL}
	cfg.ListenPeerUrls = []url.URL{s.peerURL}
	cfg.AdvertisePeerUrls = []url.URL{s.peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.LogLevel = "error"
	// At etcd's default cost, hashing a password takes long enough under
	// the race detector on a busy machine that logins outlast the tests'
	// deadlines; test passwords need no strength.
	cfg.BcryptCost = uint(bcrypt.MinCost)
	if s.tls != nil {
		cfg.ClientTLSInfo = transport.TLSInfo{CertFile: s.tls.Cert, KeyFile: s.tls.Key, TrustedCAFile: s.tls.CA, ClientCertAuth: true}
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		return errors.New("etcd did not become ready in 30s")
	}
	s.etcd = e
	return nil
}

// Stop stops the server, keeping its data.
func (s *Server) Stop() {
	if s.etcd == nil {
		return
	}
	s.etcd.Close()
	s.etcd = nil
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
	if err := os.RemoveAll(s.dir); err != nil {
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

// freeAddr returns a 127.0.0.1 address with a port free now.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("pick a free port: %w", err)
	}
	defer l.Close()
	return fmt.Sprintf("127.0.0.1:%d", l.Addr().(*net.TCPAddr).Port), nil
}

// VerifyTestMain runs m's tests, then fails them if goroutines are left
// running other than those an embedded etcd leaves: the TestMain of a
// package whose tests start etcd.
func VerifyTestMain(m *testing.M) {
	goleak.VerifyTestMain(m, IgnoredGoroutines()...)
}

// IgnoredGoroutines lists goroutines that an embedded etcd leaves running
// after it stops, for goleak.
func IgnoredGoroutines() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
	}
}
