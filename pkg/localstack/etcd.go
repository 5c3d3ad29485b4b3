package localstack

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// EtcdConfig is an etcd to start.
type EtcdConfig struct {
	Binary string // the etcd server binary
	// DataDir is the data directory of a single member; a cluster's
	// members each have DataDir/NAME.
	DataDir string
	// Members is the cluster's size; 0 means 1.
	Members int
	// Name names a single member, and a cluster's members NAME1, NAME2...;
	// it also names their processes. Empty means "etcd".
	Name string
	// TLS, when set, has the members serve clients over TLS only.
	TLS *EtcdTLS
	// Args are more flags for every member.
	Args []string
}

// EtcdTLS is what etcd serves to clients and which clients it accepts.
type EtcdTLS struct {
	Cert, Key string // PEM files of the members' certificate
	// CA, when set, signs the client certificates that etcd requires of
	// every client.
	CA string
	// Client is how [Etcd.AwaitHealthy] connects.
	Client *tls.Config
}

// Etcd is an etcd cluster of a stack, serving on 127.0.0.1.
type Etcd struct {
	stack   *Stack
	cfg     EtcdConfig
	members []*EtcdMember
}

// EtcdMember is one member of an [Etcd].
type EtcdMember struct {
	Name       string
	ClientAddr string // host:port, which also serves /metrics
	PeerAddr   string // host:port
	DataDir    string
	proc       *Process
}

// Process is the member's running (or last) process.
func (m *EtcdMember) Process() *Process { return m.proc }

// StartEtcd starts etcd's members on free ports and waits until the
// cluster answers a read, for at most 30 s. Each member's process is named
// after it and logs to its file. On error, the members already started
// stay in the stack, for [Stack.Close] to stop.
func (s *Stack) StartEtcd(ctx context.Context, cfg EtcdConfig) (*Etcd, error) {
	if cfg.Members == 0 {
		cfg.Members = 1
	}
	if cfg.Members < 0 {
		return nil, fmt.Errorf("etcd with %d members", cfg.Members)
	}
	if cfg.Name == "" {
		cfg.Name = "etcd"
	}
	e := &Etcd{stack: s, cfg: cfg}
	for i := range cfg.Members {
		m := &EtcdMember{Name: cfg.Name, DataDir: cfg.DataDir}
		if cfg.Members > 1 {
			m.Name = fmt.Sprintf("%s%d", cfg.Name, i+1)
			m.DataDir = filepath.Join(cfg.DataDir, m.Name)
		}
		var err error
		if m.ClientAddr, err = FreePort(); err != nil {
			return nil, err
		}
		if m.PeerAddr, err = FreePort(); err != nil {
			return nil, err
		}
		e.members = append(e.members, m)
	}
	for _, m := range e.members {
		if err := e.startMember(m); err != nil {
			return nil, err
		}
	}
	if err := e.AwaitHealthy(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

// Endpoints lists the members' client addresses, host:port.
func (e *Etcd) Endpoints() []string {
	eps := make([]string, len(e.members))
	for i, m := range e.members {
		eps[i] = m.ClientAddr
	}
	return eps
}

// Members lists the cluster's members.
func (e *Etcd) Members() []*EtcdMember { return e.members }

// Processes lists the members' processes.
func (e *Etcd) Processes() []*Process {
	procs := make([]*Process, len(e.members))
	for i, m := range e.members {
		procs[i] = m.proc
	}
	return procs
}

// Restart starts m again, on its ports and data directory (which may have
// been deleted: it then joins as it did first), after its process exited,
// and waits until the cluster answers a read.
func (e *Etcd) Restart(ctx context.Context, m *EtcdMember) error {
	if m.proc != nil && m.proc.Running() {
		return fmt.Errorf("etcd member %s is still running (pid %d)", m.Name, m.proc.PID())
	}
	if err := e.startMember(m); err != nil {
		return err
	}
	return e.AwaitHealthy(ctx)
}

func (e *Etcd) startMember(m *EtcdMember) error {
	initial := make([]string, len(e.members))
	for i, o := range e.members {
		initial[i] = o.Name + "=http://" + o.PeerAddr
	}
	client := "http://" + m.ClientAddr
	args := []string{
		"--name", m.Name, "--data-dir", m.DataDir,
		"--listen-peer-urls", "http://" + m.PeerAddr, "--initial-advertise-peer-urls", "http://" + m.PeerAddr,
		"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-token", e.cfg.Name,
		"--log-level", "warn",
	}
	metrics := m.ClientAddr
	if t := e.cfg.TLS; t != nil {
		client, metrics = "https://"+m.ClientAddr, ""
		args = append(args, "--cert-file", t.Cert, "--key-file", t.Key)
		if t.CA != "" {
			args = append(args, "--trusted-ca-file", t.CA, "--client-cert-auth")
		}
	}
	args = append(args, "--listen-client-urls", client, "--advertise-client-urls", client)
	p, err := e.stack.Start(Command{
		Name:    m.Name,
		Path:    e.cfg.Binary,
		Args:    append(args, e.cfg.Args...),
		Env:     withoutEtcdFlags(os.Environ()),
		LogFile: true,
		Metrics: metrics,
	})
	if err != nil {
		return err
	}
	m.proc = p
	return nil
}

// AwaitHealthy waits until a linearizable read succeeds, or is refused
// for want of a user (auth is on), for at most 30 s.
func (e *Etcd) AwaitHealthy(ctx context.Context) error {
	cfg := clientv3.Config{Endpoints: e.Endpoints(), Logger: zap.NewNop()}
	if e.cfg.TLS != nil {
		cfg.TLS = e.cfg.TLS.Client
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return fmt.Errorf("etcd client: %w", err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		// A call waits for a connection until its deadline: no busy loop.
		rctx, rcancel := context.WithTimeout(ctx, time.Second)
		_, err := cli.Get(rctx, "health")
		rcancel()
		if err == nil || answered(err) {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("etcd at %s not healthy: %w", strings.Join(e.Endpoints(), ","), err)
		}
	}
}

// answered reports whether err is etcd's refusal of a client that has not
// logged in: etcd is up.
func answered(err error) bool {
	return errors.Is(err, rpctypes.ErrUserEmpty) || errors.Is(err, rpctypes.ErrPermissionDenied)
}

// withoutEtcdFlags drops ETCD_* variables from env: etcd reads each as a
// flag, and a member's flags are the stack's alone.
func withoutEtcdFlags(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool { return strings.HasPrefix(kv, "ETCD_") })
}

// Leader returns the member that leads the cluster now, asking each
// member through cli.
func (e *Etcd) Leader(ctx context.Context, cli *clientv3.Client) (*EtcdMember, error) {
	var errs []error
	for _, m := range e.members {
		st, err := cli.Status(ctx, m.ClientAddr)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if st.Leader == st.Header.MemberId {
			return m, nil
		}
	}
	return nil, fmt.Errorf("no etcd member leads: %w", errors.Join(errs...))
}
