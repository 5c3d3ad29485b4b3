package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// proc is a process the scenario started; it is stopped by PID.
type proc struct {
	name    string
	cmd     *exec.Cmd
	done    chan struct{}
	metrics string // its /metrics address, if it serves one
}

func startProc(logDir, name, bin string, args ...string) (*proc, error) {
	cmd := exec.Command(bin, args...)
	log, err := os.Create(filepath.Join(logDir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); log.Close(); close(p.done) }()
	return p, nil
}

// signal sends sig and, for SIGKILL and SIGTERM, waits for the exit
// (killing after 20 s).
func (p *proc) signal(sig syscall.Signal) {
	p.cmd.Process.Signal(sig)
	if sig != syscall.SIGKILL && sig != syscall.SIGTERM {
		return
	}
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// etcdMember is one member of the etcd cluster a run uses.
type etcdMember struct {
	name, client, peer, dir string
	proc                    *proc
}

// etcdCluster is a real etcd (1 or 3 members) on 127.0.0.1 ports.
type etcdCluster struct {
	bin, logDir string
	members     []*etcdMember
}

func newEtcdCluster(bin, dir, logDir string, size int) *etcdCluster {
	c := &etcdCluster{bin: bin, logDir: logDir}
	for i := range size {
		name := fmt.Sprintf("etcd%d", i+1)
		c.members = append(c.members, &etcdMember{name: name, client: freeAddr(), peer: freeAddr(), dir: filepath.Join(dir, name)})
	}
	return c
}

func (c *etcdCluster) endpoints() []string {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.client)
	}
	return eps
}

func (c *etcdCluster) start(ctx context.Context) error {
	for _, m := range c.members {
		if err := c.startMember(m); err != nil {
			return err
		}
	}
	return c.awaitHealthy(ctx)
}

func (c *etcdCluster) startMember(m *etcdMember) error {
	var initial []string
	for _, o := range c.members {
		initial = append(initial, o.name+"=http://"+o.peer)
	}
	p, err := startProc(c.logDir, m.name, c.bin,
		"--name", m.name, "--data-dir", m.dir,
		"--listen-client-urls", "http://"+m.client, "--advertise-client-urls", "http://"+m.client,
		"--listen-peer-urls", "http://"+m.peer, "--initial-advertise-peer-urls", "http://"+m.peer,
		"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-token", "bench",
		"--log-level", "warn")
	if err != nil {
		return err
	}
	m.proc = p
	return nil
}

// awaitHealthy waits until a linearizable read succeeds.
func (c *etcdCluster) awaitHealthy(ctx context.Context) error {
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.endpoints(), Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		rctx, rcancel := context.WithTimeout(ctx, time.Second)
		_, err := cli.Get(rctx, "health")
		rcancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("etcd not healthy: %w", err)
		}
	}
}

func (c *etcdCluster) stop() {
	for _, m := range c.members {
		if m.proc != nil && m.proc.running() {
			m.proc.signal(syscall.SIGKILL)
		}
	}
}

// leader returns the member that leads the cluster now.
func (c *etcdCluster) leader(ctx context.Context, cli *clientv3.Client) (*etcdMember, error) {
	for _, m := range c.members {
		st, err := cli.Status(ctx, m.client)
		if err == nil && st.Leader == st.Header.MemberId {
			return m, nil
		}
	}
	return nil, fmt.Errorf("no leader found")
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}
