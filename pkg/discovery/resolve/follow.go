package resolve

import (
	"sync"

	"github.com/rollcall/rollcall/pkg/discovery"
)

// Follow keeps service's watch running, as a resolver of it would, and
// calls fn with each list the watch publishes, in order, from one
// goroutine, until stop. It is how something other than a gRPC channel
// (an xDS control plane) reads a service with the resolvers' rules: fn
// gets lists only, never an empty one because of an etcd error, and the
// last good list stays while etcd is unreachable. fn must not call stop.
func (b *Builder) Follow(service string, fn func([]discovery.Instance)) (stop func(), err error) {
	if err := discovery.ValidateService(service); err != nil {
		return nil, err
	}
	w := b.acquire(service)
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		var pushed uint64
		for {
			snap, changed := w.watchSnapshot()
			if snap.version != pushed && snap.listed {
				fn(snap.instances)
			}
			pushed = snap.version
			select {
			case <-quit:
				return
			case <-changed:
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(quit)
			<-done
			b.release(w)
		})
	}, nil
}
