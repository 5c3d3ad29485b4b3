package resolve

import (
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc/attributes"
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/resolver"

	"github.com/rollcall/rollcall/pkg/discovery"
)

// instanceKey is the attribute key under which each endpoint carries its
// discovery.Instance.
type instanceKey struct{}

// InstanceOf returns the instance an endpoint was resolved from, so that a
// balancer can read its metadata (weight, zone, version, labels).
func InstanceOf(ep resolver.Endpoint) (discovery.Instance, bool) {
	inst, ok := ep.Attributes.Value(instanceKey{}).(discovery.Instance)
	return inst, ok
}

// etcdResolver pushes its service's snapshots to one ClientConn, in order,
// from its own goroutine.
type etcdResolver struct {
	cc      resolver.ClientConn
	watch   *serviceWatch
	release func()

	quit chan struct{}
	done chan struct{}
	once sync.Once
}

var _ resolver.Resolver = (*etcdResolver)(nil)

func newResolver(cc resolver.ClientConn, w *serviceWatch, release func()) *etcdResolver {
	r := &etcdResolver{cc: cc, watch: w, release: release, quit: make(chan struct{}), done: make(chan struct{})}
	go r.run()
	return r
}

func (r *etcdResolver) run() {
	defer close(r.done)
	var pushed uint64
	for {
		snap, changed := r.watch.watchSnapshot()
		if snap.version != pushed {
			pushed = snap.version
			r.push(snap)
		}
		select {
		case <-r.quit:
			return
		case <-changed:
		}
	}
}

func (r *etcdResolver) push(snap snapshot) {
	if !snap.listed {
		if snap.err != nil {
			// Nothing known yet: fail calls fast with the reason rather
			// than leave them waiting for their deadline.
			r.cc.ReportError(fmt.Errorf("resolve service %q from etcd: %w", r.watch.service, snap.err))
		}
		return
	}
	state := stateOf(snap.instances)
	// An empty list is the truth (every instance is gone): gRPC answers
	// it with ErrBadResolverState, and calls fail at once, which is right.
	if err := r.cc.UpdateState(state); err != nil && !errors.Is(err, balancer.ErrBadResolverState) {
		r.watch.log.Warn("gRPC rejected the resolved instances", "err", err)
	}
}

// stateOf turns instances into what gRPC's balancers read: one endpoint
// each, carrying the instance, and the same as plain addresses.
func stateOf(instances []discovery.Instance) resolver.State {
	state := resolver.State{
		Endpoints: make([]resolver.Endpoint, 0, len(instances)),
		Addresses: make([]resolver.Address, 0, len(instances)),
	}
	for _, inst := range instances {
		attrs := attributes.New(instanceKey{}, inst)
		state.Endpoints = append(state.Endpoints, resolver.Endpoint{
			Addresses:  []resolver.Address{{Addr: inst.Addr}},
			Attributes: attrs,
		})
		state.Addresses = append(state.Addresses, resolver.Address{Addr: inst.Addr})
	}
	return state
}

// ResolveNow asks for a fresh list from etcd, rate-limited.
func (r *etcdResolver) ResolveNow(resolver.ResolveNowOptions) { r.watch.requestRelist() }

// Close stops pushing and, for the last resolver of a service, stops its
// etcd watch. It waits for both.
func (r *etcdResolver) Close() {
	r.once.Do(func() {
		close(r.quit)
		<-r.done
		r.release()
	})
}
