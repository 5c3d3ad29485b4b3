package resolve

import "errors"

// Observer is told what a Builder's watches do, for metrics (package
// discoverymetrics implements it for Prometheus). Calls for one service
// come one at a time from its watch goroutine; calls for different
// services may come at once. They must return quickly and must not call
// back into the Builder.
type Observer interface {
	// ResolverUpdated: the watch of service published a list of n
	// instances (after every list and every watch response).
	ResolverUpdated(service string, n int)
	// WatchRestarted: the watch of service ended and lists again, for
	// reason: "compacted", "reconnected", "resolve_now", "closed" or
	// "error".
	WatchRestarted(service, reason string)
	// ResolverEtcdError: an etcd call for service failed; op is "list" or
	// "watch".
	ResolverEtcdError(service, op string, err error)
}

// WithObserver sets who is told of updates, watch restarts and etcd errors.
func WithObserver(o Observer) Option {
	return func(b *Builder) {
		if o != nil {
			b.observer = o
		}
	}
}

type nopObserver struct{}

func (nopObserver) ResolverUpdated(string, int)             {}
func (nopObserver) WatchRestarted(string, string)           {}
func (nopObserver) ResolverEtcdError(string, string, error) {}

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
