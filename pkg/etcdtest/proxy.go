package etcdtest

import (
	"fmt"
	"io"
	"net"
	"sync"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/rollcall/rollcall/pkg/discovery"
)

// Proxy forwards a 127.0.0.1 port to a Server, so that a test can cut one
// client off from etcd while etcd itself stays up (a partition).
type Proxy struct {
	t      testing.TB // nil unless made by NewProxy
	ln     net.Listener
	target string

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// NewProxy starts a proxy to s and stops it when the test ends.
func NewProxy(t testing.TB, s *Server) *Proxy {
	t.Helper()
	p, err := ListenProxy(s.member().ClientAddr)
	if err != nil {
		t.Fatalf("%v", err)
	}
	p.t = t
	t.Cleanup(p.Close)
	return p
}

// ListenProxy starts a proxy on a free 127.0.0.1 port to the etcd client
// address target (host:port), for programs that are not tests (the
// bench's outage scenarios). Stop it with Close.
func ListenProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("proxy listen: %w", err)
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Go(p.accept)
	return p, nil
}

// Close stops accepting, cuts every proxied connection and waits for
// the proxy's goroutines.
func (p *Proxy) Close() {
	p.ln.Close()
	p.Cut()
	p.wg.Wait()
}

// Endpoint is the address clients of the proxy dial.
func (p *Proxy) Endpoint() string { return "http://" + p.ln.Addr().String() }

// Client returns a client that reaches etcd through the proxy; only for
// a proxy made by NewProxy.
func (p *Proxy) Client() *clientv3.Client {
	p.t.Helper()
	c, err := discovery.NewEtcdClient(clientv3.Config{Endpoints: []string{p.Endpoint()}, Logger: zap.NewNop()})
	if err != nil {
		p.t.Fatalf("etcd client: %v", err)
	}
	p.t.Cleanup(func() { c.Close() })
	return c
}

// Cut closes every proxied connection and refuses new ones until Restore.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		c.Close()
	}
}

// Restore lets connections through again.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
}

func (p *Proxy) accept() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Go(func() { p.forward(in) })
	}
}

func (p *Proxy) forward(in net.Conn) {
	defer in.Close()
	out, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer out.Close()
	if !p.track(in, out) {
		return
	}
	defer p.untrack(in, out)
	done := make(chan struct{}, 2)
	go func() { io.Copy(out, in); done <- struct{}{} }()
	go func() { io.Copy(in, out); done <- struct{}{} }()
	<-done
	in.Close()
	out.Close()
	<-done
}

func (p *Proxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		return false
	}
	for _, c := range conns {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *Proxy) untrack(conns ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range conns {
		delete(p.conns, c)
	}
}
