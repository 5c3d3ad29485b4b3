// Package register keeps one service instance registered in etcd for as
// long as the instance runs: a key under a lease, kept alive, and written
// again under a new lease whenever it is lost, without limit.
package register

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
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
	// Duplicate: another live process registers this instance's ID with
	// another address. Err, a *DuplicateError, names both; nothing more
	// is tried.
	Duplicate
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
	case Duplicate:
		return "duplicate"
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
	client    *clientv3.Client
	inst      discovery.Instance
	key       string
	namespace string
	value     string
	ttl       time.Duration
	log       *slog.Logger
	obs       Observer

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
		client:    client,
		inst:      inst,
		key:       discovery.Key(o.namespace, inst),
		namespace: o.namespace,
		value:     string(value),
		ttl:       o.ttl.Truncate(time.Second),
		log:       o.logger.With("service", inst.Service, "instance", inst.ID, "addr", inst.Addr),
		cancel:    cancel,
		done:      make(chan struct{}),
		state:     State{Phase: Registering, Since: time.Now()},
		changed:   make(chan struct{}),
		obs:       o.observer,
	}
	r.obs.RegistrationChanged(r, r.state)
	go r.run(ctx)
	return r, nil
}

// Done is closed when the registration has stopped for good: after Close,
// when etcd denied it (phase Denied), or when another live process holds
// its ID (phase Duplicate); State().Err says why.
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

// reconnectSpread: what a reconnect triggers waits a random part of it,
// so that instances which all see etcd return at once do not all write in
// the same instant. Their clients' reconnects, jittered by gRPC's backoff,
// already spread them over about a second; this stays small so that all
// are written again within 2 s of etcd's return.
const reconnectSpread = 100 * time.Millisecond

// DuplicateError is the final error of a registration whose instance ID
// another live process holds, with another address.
type DuplicateError struct {
	ID, Addr, OtherAddr string
}

func (e *DuplicateError) Error() string {
	return fmt.Sprintf("instance ID %q is registered by another live process at %s (this one serves %s): give each process its own ID",
		e.ID, e.OtherAddr, e.Addr)
}

// run writes the key, holds it while it lasts, and starts over when it is
// lost, until ctx ends.
func (r *Registration) run(ctx context.Context) {
	defer close(r.done)
	reconnected, waitNotify := reconnect.Start(ctx, r.client.ActiveConnection())
	defer waitNotify()
	key := &keyWatch{client: r.client, key: r.key, parent: ctx}
	defer key.stop()

	bo := backoff.Default()
	var stale clientv3.LeaseID // a previous lease to revoke once the key has moved off it
	var deniedSince time.Time  // when etcd began refusing, zero while it does not
	for {
		lease, rev, err := r.write(ctx, r.State().Writes == 0)
		if err == nil {
			if stale != clientv3.NoLease {
				r.revokeStale(ctx, stale)
				stale = clientv3.NoLease
			}
			deniedSince = time.Time{}
			r.setState(Registered, lease, nil)
			reconnect.Drain(reconnected) // the write reached etcd after any reconnect so far
			held := time.Now()
			err = r.hold(ctx, key, lease, rev, reconnected)
			if errors.Is(err, errDisplaced) || errors.Is(err, errKeyReleased) {
				// The lease lives and holds nothing now: revoke it once the
				// key is written again. A deleted key's lease is left to
				// expire (it is not renewed), which costs etcd no request.
				stale = lease
			}
			if time.Since(held) >= r.ttl {
				// Held a while, then lost: write again at once.
				bo.Reset()
				if ctx.Err() == nil && !errors.Is(err, errDisplaced) {
					r.setState(Retrying, clientv3.NoLease, err)
					continue
				}
			}
		}
		if ctx.Err() != nil {
			return
		}
		if dup := (*DuplicateError)(nil); errors.As(err, &dup) {
			r.setState(Duplicate, clientv3.NoLease, err)
			r.log.Error("another live process registers this instance ID; stopping", "err", err)
			r.cancel() // ends the reconnect watcher, so Done closes
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
			if !sleep(ctx, rand.N(reconnectSpread)) {
				return
			}
		case <-time.After(r.retryWait(&bo, deniedSince)):
		}
	}
}

// retryWait is the backoff's next delay, cut so that a refusal becomes
// final when it has lasted a lease TTL, not a backoff later.
func (r *Registration) retryWait(bo *backoff.Backoff, deniedSince time.Time) time.Duration {
	wait := bo.Next()
	if !deniedSince.IsZero() {
		wait = max(0, min(wait, time.Until(deniedSince.Add(r.ttl))))
	}
	return wait
}

// sleep waits d or until ctx ends, and reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// write grants a lease and puts the key under it, returning the revision
// of the put. A live key is overwritten in place, never deleted first, so
// clients never see the instance vanish while it re-registers.
//
// A key that holds another address is another process's: before this
// registration has ever written, that is a DuplicateError when the other
// process renews its lease (a dead one's key is overwritten); after, the
// two processes displace each other, and both log it each time.
func (r *Registration) write(ctx context.Context, first bool) (clientv3.LeaseID, int64, error) {
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
	put := clientv3.OpPut(r.key, r.value, clientv3.WithLease(grant.ID))
	resp, err := r.client.Txn(callCtx).
		If(clientv3.Compare(clientv3.CreateRevision(r.key), "=", 0)).
		Then(put).Else(clientv3.OpGet(r.key)).Commit()
	if err == nil && !resp.Succeeded {
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
			if other, ok := r.otherHolder(kvs[0]); ok {
				err = r.conflict(ctx, first, other, clientv3.LeaseID(kvs[0].Lease))
			}
		}
		if err == nil {
			// The check may have taken a while: the put has its own timeout.
			putCtx, cancel := context.WithTimeout(ctx, r.callTimeout())
			defer cancel()
			var p *clientv3.PutResponse
			if p, err = r.client.Put(putCtx, r.key, r.value, clientv3.WithLease(grant.ID)); err == nil {
				return grant.ID, p.Header.Revision, nil
			}
		}
	}
	if err != nil {
		// The lease holds nothing: revoke it rather than leave it to etcd.
		r.revokeUnused(ctx, grant.ID)
		if dup := (*DuplicateError)(nil); errors.As(err, &dup) {
			return clientv3.NoLease, 0, err
		}
		r.etcdFailed(ctx, "put", err)
		return clientv3.NoLease, 0, fmt.Errorf("put %s: %w", r.key, err)
	}
	return grant.ID, resp.Header.Revision, nil
}

// otherHolder returns the instance a key holds when it is not this
// registration's (another address); a value that does not parse is
// nobody's and is overwritten.
func (r *Registration) otherHolder(kv *mvccpb.KeyValue) (discovery.Instance, bool) {
	other, err := discovery.Decode(r.namespace, r.inst.Service, string(kv.Key), kv.Value)
	if err != nil || other.Addr == r.inst.Addr {
		return discovery.Instance{}, false
	}
	return other, true
}

// conflict handles a key that another address holds under lease: an
// error before the first write when its holder is alive, and a logged,
// counted displacement otherwise.
func (r *Registration) conflict(ctx context.Context, first bool, other discovery.Instance, lease clientv3.LeaseID) error {
	if first {
		live, err := r.renewedByItsHolder(ctx, lease)
		if err != nil {
			return err
		}
		if live {
			return &DuplicateError{ID: r.inst.ID, Addr: r.inst.Addr, OtherAddr: other.Addr}
		}
		r.log.Warn("overwriting a key of this instance ID left by a process that no longer renews it", "key", r.key, "other_addr", other.Addr)
		return nil
	}
	r.displaced(other)
	return nil
}

// displaced logs and counts another process writing this instance's key.
func (r *Registration) displaced(other discovery.Instance) {
	r.obs.RegistrationConflict(r, other)
	r.log.Error("another process registers this instance ID with another address; the two displace each other until one stops: give each its own ID",
		"key", r.key, "other_addr", other.Addr)
}

// renewedByItsHolder watches lease's remaining TTL (whole seconds) for a
// third of its TTL and a bit more, the longest a live holder waits between
// renewals: a TTL that rises, or that has not fallen after 1.5 s, is being
// renewed; one that expires or only falls is not.
func (r *Registration) renewedByItsHolder(ctx context.Context, lease clientv3.LeaseID) (bool, error) {
	start := time.Now()
	var first int64
	var deadline time.Time
	prev := int64(-1)
	for {
		callCtx, cancel := context.WithTimeout(ctx, r.callTimeout())
		ttl, err := r.client.TimeToLive(callCtx, lease)
		cancel()
		switch {
		case errors.Is(err, rpctypes.ErrLeaseNotFound) || err == nil && ttl.TTL <= 0:
			return false, nil
		case err != nil:
			return false, fmt.Errorf("lease of the key's holder: %w", err)
		case prev < 0:
			first = ttl.TTL
			deadline = start.Add(time.Duration(ttl.GrantedTTL)*time.Second/3 + 1500*time.Millisecond)
		case ttl.TTL > prev, ttl.TTL >= first && time.Since(start) >= 1500*time.Millisecond:
			return true, nil
		case time.Now().After(deadline):
			return false, nil
		}
		prev = ttl.TTL
		if !sleep(ctx, 250*time.Millisecond) {
			return false, ctx.Err()
		}
	}
}

// revokeUnused revokes a lease granted for a write that failed, rather
// than leave it to etcd to expire.
func (r *Registration) revokeUnused(ctx context.Context, lease clientv3.LeaseID) {
	callCtx, cancel := context.WithTimeout(ctx, r.callTimeout())
	defer cancel()
	if _, err := r.client.Revoke(callCtx, lease); err == nil || errors.Is(err, rpctypes.ErrLeaseNotFound) {
		r.mu.Lock()
		if r.granted == lease {
			r.granted = clientv3.NoLease
		}
		r.mu.Unlock()
	}
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

// renewalPeriod is the wait between renewals: a third of the TTL less up
// to a tenth of that, at random, so that instances registered together
// drift apart instead of renewing in step for ever.
func (r *Registration) renewalPeriod() time.Duration {
	return r.ttl/3 - rand.N(r.ttl/30+1)
}

var (
	errKeyDeleted   = errors.New("key deleted from etcd")
	errLeaseExpired = errors.New("lease expired or revoked in etcd")
	errDisplaced    = errors.New("key written by another process")
	errKeyReleased  = errors.New("key written again under another lease")
)

// keyWatch watches the registration's key for as long as the
// registration runs: writing the key again after a loss keeps the watch,
// which costs etcd nothing new.
type keyWatch struct {
	client *clientv3.Client
	key    string
	parent context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when the forwarding goroutine returns
	events clientv3.WatchChan
}

// from watches again from rev. The client's Watch blocks until etcd
// opens a watch stream, which it cannot while etcd is down, so it is
// called on a goroutine that forwards the responses: hold goes on
// renewing meanwhile.
func (w *keyWatch) from(rev int64) {
	w.stop()
	// WithRequireLeader: a member cut off from its cluster ends the
	// watch instead of leaving it silent.
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(w.parent))
	events, done := make(chan clientv3.WatchResponse), make(chan struct{})
	go func() {
		defer close(done)
		defer close(events)
		watch := w.client.Watch(ctx, w.key, clientv3.WithRev(rev))
		for {
			select {
			case <-ctx.Done():
				return
			case resp, ok := <-watch:
				if !ok {
					return
				}
				select {
				case events <- resp:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	w.cancel, w.done, w.events = cancel, done, events
}

func (w *keyWatch) stop() {
	if w.cancel != nil {
		w.cancel()
		<-w.done
		w.cancel, w.done, w.events = nil, nil, nil
	}
}

// hold keeps the lease alive and watches the key, returning why the
// registration was lost: the lease is gone (expired during a partition,
// etcd wiped or replaced), the key was deleted, or another process wrote
// it.
//
// It renews with KeepAliveOnce on its own timer instead of the client's
// KeepAlive channel, because that channel closes for good after one TTL
// without an answer and renews only every TTL/3 even right after etcd
// comes back; here a renewal follows every reconnect.
func (r *Registration) hold(ctx context.Context, key *keyWatch, lease clientv3.LeaseID, rev int64, reconnected <-chan struct{}) error {
	if key.events == nil {
		key.from(rev + 1)
	}
	timer := time.NewTimer(r.renewalPeriod())
	defer timer.Stop()
	bo := backoff.UpTo(r.ttl / 4)
	watchBo := backoff.Default()
	var rewatch <-chan time.Time // set while the key is not watched
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-reconnected:
			timer.Reset(rand.N(reconnectSpread))
			continue
		case <-timer.C:
		case resp, ok := <-key.events:
			if ok && resp.Err() == nil {
				if err := r.keyChanged(resp.Events, lease, rev); err != nil {
					return err
				}
				continue
			}
			// The watch ended (no leader, compaction, cancel): look at the
			// key itself, then watch again from where it stands. Renewals
			// go on meanwhile.
			key.stop()
			rewatch = time.After(0)
			continue
		case <-rewatch:
			kv, now, err := r.getKey(ctx)
			switch {
			case errors.Is(err, rpctypes.ErrPermissionDenied):
				return err
			case err != nil:
				rewatch = time.After(watchBo.Next())
				continue
			}
			rewatch = nil
			watchBo.Reset()
			key.from(now + 1)
			if kv == nil {
				return errKeyDeleted
			}
			if err := r.keyChanged([]*clientv3.Event{{Type: clientv3.EventTypePut, Kv: kv}}, lease, rev); err != nil {
				return err
			}
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
			timer.Reset(r.renewalPeriod())
		}
	}
}

// keyChanged says why changes to the key after rev lose the registration
// under lease, if they do.
func (r *Registration) keyChanged(events []*clientv3.Event, lease clientv3.LeaseID, rev int64) error {
	for _, ev := range events {
		switch {
		case ev.Kv.ModRevision <= rev:
			// From before this write (a resumed watch catching up).
		case ev.Type == clientv3.EventTypeDelete:
			return errKeyDeleted
		case clientv3.LeaseID(ev.Kv.Lease) == lease:
		default:
			if other, ok := r.otherHolder(ev.Kv); ok {
				r.displaced(other)
				return errDisplaced
			}
			return errKeyReleased
		}
	}
	return nil
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

// getKey reads the key (nil when absent) and etcd's current revision.
func (r *Registration) getKey(ctx context.Context) (*mvccpb.KeyValue, int64, error) {
	callCtx, cancel := context.WithTimeout(ctx, r.callTimeout())
	defer cancel()
	resp, err := r.client.Get(callCtx, r.key)
	switch {
	case err != nil:
		r.etcdFailed(ctx, "get", err)
		return nil, 0, fmt.Errorf("get %s: %w", r.key, err)
	case len(resp.Kvs) == 0:
		return nil, resp.Header.Revision, nil
	}
	return resp.Kvs[0], resp.Header.Revision, nil
}
