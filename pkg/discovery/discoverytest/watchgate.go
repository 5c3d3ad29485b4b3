package discoverytest

import (
	"context"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// WatchGate holds a client's Watch calls until Open, so that a test can
// change etcd (write, delete, compact) between a resolver's list and its
// watch: etcd then answers the watch as it answers one that starts late,
// from a revision that may be compacted.
type WatchGate struct {
	clientv3.Watcher
	held     chan struct{} // closed when the first call is held
	heldOnce sync.Once
	open     chan struct{}
	openOnce sync.Once
}

// GateWatches puts a WatchGate in front of c's watches. c must be a
// client of its own, not yet watching.
func GateWatches(c *clientv3.Client) *WatchGate {
	g := &WatchGate{Watcher: c.Watcher, held: make(chan struct{}), open: make(chan struct{})}
	c.Watcher = g
	return g
}

// Held is closed once a Watch call waits at the gate.
func (g *WatchGate) Held() <-chan struct{} { return g.held }

// Open lets every held and later Watch call through.
func (g *WatchGate) Open() { g.openOnce.Do(func() { close(g.open) }) }

// Watch waits for Open (or ctx), then watches.
func (g *WatchGate) Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	g.heldOnce.Do(func() { close(g.held) })
	select {
	case <-g.open:
	case <-ctx.Done():
	}
	return g.Watcher.Watch(ctx, key, opts...)
}
