package register

import (
	"context"

	"github.com/rollcall/rollcall/pkg/discovery"
)

// Observer is told what a registration does, for metrics (package
// discoverymetrics implements it for Prometheus): every state it enters
// and every etcd call of it that failed. Calls for one registration come
// one at a time, in order, from New, its goroutine and Close.
type Observer interface {
	// RegistrationChanged: r entered state s. The first call, from New,
	// is for Registering; the last is for Closed. It is made under r's
	// lock, before Watch reports the change, so it must return quickly
	// and call no method of r but Instance and Key.
	RegistrationChanged(r *Registration, s State)
	// RegistrationEtcdError: an etcd call of r failed; op is "grant",
	// "put", "keepalive" or "get".
	RegistrationEtcdError(r *Registration, op string, err error)
	// RegistrationConflict: another process wrote r's key with another
	// address (two processes share an instance ID); r writes it again.
	RegistrationConflict(r *Registration, other discovery.Instance)
}

// WithObserver sets who is told of state changes and etcd errors.
func WithObserver(o Observer) Option {
	return func(opts *options) {
		if o != nil {
			opts.observer = o
		}
	}
}

type nopObserver struct{}

func (nopObserver) RegistrationChanged(*Registration, State)               {}
func (nopObserver) RegistrationEtcdError(*Registration, string, error)     {}
func (nopObserver) RegistrationConflict(*Registration, discovery.Instance) {}

// etcdFailed tells the observer of a failed etcd call, unless it failed
// because the registration is closing.
func (r *Registration) etcdFailed(ctx context.Context, op string, err error) {
	if ctx.Err() == nil {
		r.obs.RegistrationEtcdError(r, op, err)
	}
}
