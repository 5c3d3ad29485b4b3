// Package register keeps one service instance registered in etcd for as
// long as the instance runs: a key under a lease, kept alive, and written
// again under a new lease whenever it is lost, without limit.
package register

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/discovery/internal/backoff"
	"github.com/rollcall/rollcall/pkg/discovery/internal/reconnect"
)

// DefaultTTL is the lease TTL unless WithTTL says otherwise: how long a
// killed instance's key outlives it.
const DefaultTTL = 10 * time.Second

// Phase is where a registration stands.
type Phase int

const (
	// Registering: the first write has not succeeded yet.
	Registering Phase = iota
	// Registered: the key is in etcd under a live lease.
	Registered
	// Retrying: the key or lease was lost, or etcd does not answer; the
	// registration is writing the key again under a new lease.
	Retrying
	// Closed: Close was called; the lease is revoked or left to expire.
	Closed
	// Denied: etcd refused the key for a whole lease TTL: the etcd user's
	// role may not write it. Err says so; nothing more is tried. See
	// docs/security.md.
	Denied
)

func (p Phase) String() string {
	switch p {
	case Registering:
		return "registering"
	case Registered:
		return "registered"
	case Retrying:
		return "retrying"
	case Closed:
		return "closed"
	case Denied:
		return "denied"
	}
	return fmt.Sprintf("Phase(%d)", int(p))
}

// State is a snapshot of a registration, for logs, health and metrics.
type State struct {
	Phase Phase
	// Lease holds the key while Registered.
	Lease clientv3.LeaseID
	// Err is the last error that made the registration retry.
	Err error
	// Since is when Phase began.
	Since time.Time
	// Writes counts successful writes of the key; above 1 means the key
	// was written again after a loss.
	Writes int
}

// Option changes a registration's defaults.
type Option func(*options)

type options struct {
	namespace string
	ttl       time.Duration
	logger    *slog.Logger
	observer  Observer
}

// WithNamespace sets the first key segment (default discovery.DefaultNamespace).
func WithNamespace(ns string) Option { return func(o *options) { o.namespace = ns } }

// WithTTL sets the lease TTL, at least one second (default DefaultTTL).
func WithTTL(ttl time.Duration) Option { return func(o *options) { o.ttl = ttl } }

// WithLogger sets where state changes are logged (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// Registration keeps one instance's key in etcd until Close.
type Registration struct {
	client *clientv3.Client
	inst   discovery.Instance
	key    string
	value  string
	ttl    time.Duration
	log    *slog.Logger
	obs    Observer

	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	state   State
	changed chan struct{}
	granted clientv3.LeaseID // the lease of the latest write, which Close revokes

	closeOnce sync.Once
	closeErr  error
}

// New validates inst, fills in a default ID, and starts keeping it
// registered in the background. It does not wait for etcd: a registration
// made while etcd is down retries until etcd answers. Watch its state with
// State or Watch; stop it with Close.
func New(client *clientv3.Client, inst discovery.Instance, opts ...Option) (*Registration, error) {
	o := options{namespace: discovery.DefaultNamespace, ttl: DefaultTTL, logger: slog.Default(), observer: nopObserver{}}
	for _, opt := range opts {
		opt(&o)
	}
	if err := discovery.ValidateNamespace(o.namespace); err != nil {
		return nil, err
	}
	if o.ttl < time.Second {
		return nil, fmt.Errorf("lease TTL %v is below the 1s etcd allows", o.ttl)
	}
	if client == nil {
		return nil, errors.New("register: nil etcd client")
	}
	if inst.ID == "" {
		inst.ID = discovery.DefaultID(inst.Addr)
	}
	value, err := discovery.Encode(inst)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Registration{
		client:  client,
		inst:    inst,
		key:     discovery.Key(o.namespace, inst),
		value:   string(value),
		ttl:     o.ttl.Truncate(time.Second),
		log:     o.logger.With("service", inst.Service, "instance", inst.ID, "addr", inst.Addr),
		cancel:  cancel,
		done:    make(chan struct{}),
		state:   State{Phase: Registering, Since: time.Now()},
		changed: make(chan struct{}),
		obs:     o.observer,
	}
	r.obs.RegistrationChanged(r, r.state)
	go r.run(ctx)
	return r, nil
}

// Done is closed when the registration has stopped for good: after Close,
// or when etcd denied it (phase Denied, State().Err says why).
func (r *Registration) Done() <-chan struct{} { return r.done }

// Instance returns what is registered, with its ID filled in.
func (r *Registration) Instance() discovery.Instance { return r.inst }

// Key returns the etcd key the registration writes.
func (r *Registration) Key() string { return r.key }

// State returns the registration's current state.
func (r *Registration) State() State {
	s, _ := r.Watch()
	return s
}

// Watch returns the current state and a channel that is closed at the next
// change, so a caller can wait for a state without polling.
func (r *Registration) Watch() (State, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state, r.changed
}

func (r *Registration) setState(p Phase, lease clientv3.LeaseID, err error) {
	r.mu.Lock()
	prev := r.state
	if prev.Phase == Closed {
		r.mu.Unlock()
		return
	}
	next := State{Phase: p, Lease: lease, Err: err, Since: prev.Since, Writes: prev.Writes}
	if p != prev.Phase {
		next.Since = time.Now()
	}
	if p == Registered {
		next.Writes++
	}
	r.state = next
	r.obs.RegistrationChanged(r, next)
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()

	switch {
	case p == Registered && next.Writes == 1:
		r.log.Info("registered in etcd", "key", r.key, "lease", int64(lease))
	case p == Registered:
		r.log.Info("registered in etcd again", "key", r.key, "lease", int64(lease), "writes", next.Writes)
	case p == Retrying && prev.Phase != Retrying:
		r.log.Warn("registration lost; writing it again until etcd accepts it", "key", r.key, "err", err)
	}
}

// Close stops the registration and revokes its lease, so the key is gone
// at once and clients stop picking the instance. It is bounded by ctx: when
// etcd does not answer in time the lease is left to expire within its TTL.
// Calling it again returns the first call's result.
func (r *Registration) Close(ctx context.Context) error {
	r.closeOnce.Do(func() {
		r.cancel()
		<-r.done
		// Revoke the lease last granted, not only the one the state names:
		// a put cut short by Close may still have been applied.
		r.mu.Lock()
		lease := r.granted
		r.state = State{Phase: Closed, Since: time.Now(), Writes: r.state.Writes}
		r.obs.RegistrationChanged(r, r.state)
		close(r.changed)
		r.changed = make(chan struct{})
		r.mu.Unlock()
		if lease == clientv3.NoLease {
			return
		}
		if _, err := r.client.Revoke(ctx, lease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			r.closeErr = fmt.Errorf("revoke lease of %s: %w (the key expires within %v)", r.key, err, r.ttl)
			return
		}
		r.log.Info("deregistered from etcd", "key", r.key)
	})
	return r.closeErr
}

// Retry timing. Attempts wait at most maxBackoff apart, so the key is
// written again soon after etcd answers; the reconnect signal usually
// makes it sooner still.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = time.Second
)

// run writes the key, holds it while it lasts, and starts over when it is
// lost, until ctx ends.
func (r *Registration) run(ctx context.Context) {
	defer close(r.done)
	reconnected := make(chan struct{}, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { reconnect.Notify(ctx, r.client.ActiveConnection(), reconnected) })

	bo := backoff.Backoff{Base: minBackoff, Max: maxBackoff}
	var stale clientv3.LeaseID // a previous lease to revoke once the key has moved off it
	var deniedSince time.Time  // when etcd began refusing, zero while it does not
	for {
		lease, rev, err := r.write(ctx)
		if err == nil {
			if stale != clientv3.NoLease {
				r.revokeStale(ctx, stale)
			}
			deniedSince = time.Time{}
			r.setState(Registered, lease, nil)
			err = r.hold(ctx, lease, rev, reconnected)
			stale = lease
			bo.Reset()
		}
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, rpctypes.ErrPermissionDenied) {
			err = fmt.Errorf("etcd denies this instance's etcd user access to %s: its role needs readwrite on prefix %q: %w",
				r.key, strings.TrimSuffix(r.key, r.inst.ID), err)
			// Operators edit a role by revoking and granting again: only a
			// refusal that lasts a lease TTL is final.
			if deniedSince.IsZero() {
				deniedSince = time.Now()
				r.log.Warn("etcd denies the registration; trying again for a lease TTL in case the role is being edited",
					"err", err, "ttl", r.ttl)
			} else if time.Since(deniedSince) >= r.ttl {
				r.setState(Denied, clientv3.NoLease, err)
				r.log.Error("registration denied by etcd", "err", err, "for", time.Since(deniedSince).Round(time.Millisecond))
				r.cancel() // ends the reconnect watcher, so Done closes
				return
			}
		} else {
			deniedSince = time.Time{}
		}
		r.setState(Retrying, clientv3.NoLease, err)
		r.log.Debug("registration attempt failed", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-reconnected:
		case <-time.After(bo.Next()):
		}
	}
}

// write grants a lease and puts the key under it, returning the revision
// of the put. A live key is overwritten in place, never deleted first, so
// clients never see the instance vanish while it re-registers.
func (r *Registration) write(ctx context.Context) (clientv3.LeaseID, int64, error) {
	callCtx, cancel := context.WithTimeout(ctx, r.callTimeout())
	defer cancel()
	grant, err := r.client.Grant(callCtx, int64(r.ttl/time.Second))
	if err != nil {
		r.etcdFailed(ctx, "grant", err)
		return clientv3.NoLease, 0, fmt.Errorf("grant lease: %w", err)
	}
	r.mu.Lock()
	r.granted = grant.ID
	r.mu.Unlock()
	put, err := r.client.Put(callCtx, r.key, r.value, clientv3.WithLease(grant.ID))
	if err != nil {
		r.etcdFailed(ctx, "put", err)
		// The lease holds nothing; let it expire rather than wait on etcd.
		return clientv3.NoLease, 0, fmt.Errorf("put %s: %w", r.key, err)
	}
	return grant.ID, put.Header.Revision, nil
}

func (r *Registration) revokeStale(ctx context.Context, lease clientv3.LeaseID) {
	callCtx, cancel := context.WithTimeout(ctx, r.callTimeout())
	defer cancel()
	// Best effort: a lease that etcd lost or that cannot be reached now
	// expires by itself, and it holds no key any more.
	_, _ = r.client.Revoke(callCtx, lease)
}

// callTimeout bounds each etcd call: long enough for a loaded etcd, short
// enough that a retry comes well within one TTL.
func (r *Registration) callTimeout() time.Duration { return min(r.ttl/3, 2*time.Second) }

var (
	errKeyDeleted   = errors.New("key deleted from etcd")
	errLeaseExpired = errors.New("lease expired or revoked in etcd")
)

// hold keeps the lease alive and watches the key, returning why the
// registration was lost: the lease is gone (expired during a partition,
// etcd wiped or replaced) or the key was deleted.
//
// It renews with KeepAliveOnce on its own timer instead of the client's
// KeepAlive channel, because that channel closes for good after one TTL
// without an answer and renews only every TTL/3 even right after etcd
// comes back; here a renewal follows every reconnect at once.
func (r *Registration) hold(ctx context.Context, lease clientv3.LeaseID, rev int64, reconnected <-chan struct{}) error {
	stopWatch := func() {}
	defer func() { stopWatch() }()
	watchFrom := func(rev int64) clientv3.WatchChan {
		stopWatch()
		var wctx context.Context
		wctx, stopWatch = context.WithCancel(clientv3.WithRequireLeader(ctx))
		return r.client.Watch(wctx, r.key, clientv3.WithRev(rev))
	}
	events := watchFrom(rev + 1)

	renewEvery := r.ttl / 3
	timer := time.NewTimer(renewEvery)
	defer timer.Stop()
	bo := backoff.Backoff{Base: minBackoff, Max: maxBackoff}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-reconnected:
		case <-timer.C:
		case resp, ok := <-events:
			if ok && resp.Err() == nil {
				for _, ev := range resp.Events {
					if ev.Type == clientv3.EventTypeDelete {
						return errKeyDeleted
					}
				}
				continue
			}
			// The watch ended (no leader, compaction, cancel): look at
			// the key itself, then watch again from where it stands.
			var err error
			if rev, err = r.checkKey(ctx, lease); err != nil {
				return err
			}
			events = watchFrom(rev + 1)
			continue
		}
		err := r.renew(ctx, lease)
		switch {
		case errors.Is(err, errLeaseExpired):
			return err
		case err != nil:
			r.log.Debug("lease renewal failed; retrying", "err", err)
			timer.Reset(bo.Next())
		default:
			bo.Reset()
			timer.Reset(renewEvery)
		}
	}
}

func (r *Registration) renew(ctx context.Context, lease clientv3.LeaseID) error {
	callCtx, cancel := context.WithTimeout(ctx, r.callTimeout())
	defer cancel()
	resp, err := r.client.KeepAliveOnce(callCtx, lease)
	if errors.Is(err, rpctypes.ErrLeaseNotFound) || err == nil && resp.TTL <= 0 {
		return errLeaseExpired
	}
	if err != nil {
		r.etcdFailed(ctx, "keepalive", err)
		return fmt.Errorf("renew lease: %w", err)
	}
	return nil
}

// checkKey returns the current revision if the key still holds this
// registration under lease, and why not otherwise. It retries while etcd
// does not answer, since the lease may well be alive.
func (r *Registration) checkKey(ctx context.Context, lease clientv3.LeaseID) (int64, error) {
	bo := backoff.Backoff{Base: minBackoff, Max: maxBackoff}
	for {
		callCtx, cancel := context.WithTimeout(ctx, r.callTimeout())
		resp, err := r.client.Get(callCtx, r.key)
		cancel()
		switch {
		case err == nil && len(resp.Kvs) == 0:
			return 0, errKeyDeleted
		case err == nil && clientv3.LeaseID(resp.Kvs[0].Lease) != lease:
			return 0, errLeaseExpired
		case err == nil:
			return resp.Header.Revision, nil
		case errors.Is(err, rpctypes.ErrPermissionDenied):
			return 0, fmt.Errorf("get %s: %w", r.key, err)
		}
		r.etcdFailed(ctx, "get", err)
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(bo.Next()):
		}
	}
}
