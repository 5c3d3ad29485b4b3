package localstack

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

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
	p, err := e.stack.Start(Command{
		Name: m.Name,
		Path: e.cfg.Binary,
		Args: []string{
			"--name", m.Name, "--data-dir", m.DataDir,
			"--listen-client-urls", "http://" + m.ClientAddr, "--advertise-client-urls", "http://" + m.ClientAddr,
			"--listen-peer-urls", "http://" + m.PeerAddr, "--initial-advertise-peer-urls", "http://" + m.PeerAddr,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-token", e.cfg.Name,
			"--log-level", "warn",
		},
		LogFile: true,
		Metrics: m.ClientAddr,
	})
	if err != nil {
		return err
	}
	m.proc = p
	return nil
}

// AwaitHealthy waits until a linearizable read succeeds, for at most 30 s.
func (e *Etcd) AwaitHealthy(ctx context.Context) error {
	cli, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints(), Logger: zap.NewNop()})
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
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("etcd at %s not healthy: %w", strings.Join(e.Endpoints(), ","), err)
		}
	}
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
