package resolve

import (
	"errors"

	"github.com/rollcall/rollcall/pkg/discovery"
)

// Observer is told what a Builder's watches do, for metrics, logs and
// tests (package discoverymetrics implements it for Prometheus). Calls for one service
// come one at a time from its watch goroutine; calls for different
// services may come at once. They must return quickly and must not call
// back into the Builder.
type Observer interface {
	// ResolverUpdated: the watch of service published instances, sorted
	// by ID (after every list and every watch response). The slice is
	// shared with the resolvers: read it, keep it if need be, never
	// modify it.
	ResolverUpdated(service string, instances []discovery.Instance)
	// WatchRestarted: the watch of service ended and lists again, for
	// reason: "compacted", "reconnected", "resolve_now", "closed" or
	// "error".
	WatchRestarted(service, reason string)
	// ResolverEtcdError: an etcd call for service failed; op is "list" or
	// "watch".
	ResolverEtcdError(service, op string, err error)
}

// WithObserver adds o to those told of updates, watch restarts and etcd
// errors; each is told in the order they were added.
func WithObserver(o Observer) Option {
	return func(b *Builder) {
		if o != nil {
			b.observers = append(b.observers, o)
		}
	}
}

// UpdateFunc is an Observer told only of published lists.
type UpdateFunc func(service string, instances []discovery.Instance)

// ResolverUpdated calls f.
func (f UpdateFunc) ResolverUpdated(service string, instances []discovery.Instance) {
	f(service, instances)
}

// WatchRestarted does nothing.
func (UpdateFunc) WatchRestarted(string, string) {}

// ResolverEtcdError does nothing.
func (UpdateFunc) ResolverEtcdError(string, string, error) {}

// observers tells each of its Observers.
type observers []Observer

func (all observers) ResolverUpdated(service string, instances []discovery.Instance) {
	for _, o := range all {
		o.ResolverUpdated(service, instances)
	}
}

func (all observers) WatchRestarted(service, reason string) {
	for _, o := range all {
		o.WatchRestarted(service, reason)
	}
}

func (all observers) ResolverEtcdError(service, op string, err error) {
	for _, o := range all {
		o.ResolverEtcdError(service, op, err)
	}
}

// Why a watch ends, other than a response error.
var (
	errWatchCompacted = errors.New("watch compacted")
	errReconnected    = errors.New("etcd connection re-established")
	errWatchClosed    = errors.New("watch channel closed")
)

// restartReason names why a watch ended, with few enough values to be a
// metric label.
func restartReason(err error) string {
	switch {
	case errors.Is(err, errWatchCompacted):
		return "compacted"
	case errors.Is(err, errReconnected):
		return "reconnected"
	case errors.Is(err, errRelistRequested):
		return "resolve_now"
	case errors.Is(err, errWatchClosed):
		return "closed"
	}
	return "error"
}
