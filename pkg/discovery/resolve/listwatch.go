package resolve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/discovery/internal/backoff"
	"github.com/rollcall/rollcall/pkg/discovery/internal/reconnect"
)

// Timing of the list-and-watch loop; lists that fail are retried with
// backoff.Default.
const (
	// reconnectSpread: the list a reconnect triggers waits a random part
	// of it, so that every client that sees etcd return does not list in
	// the same instant.
	reconnectSpread = 250 * time.Millisecond
	// minRelistInterval rate-limits re-lists that gRPC asks for through
	// ResolveNow (it asks whenever a connection fails). The watch keeps
	// the list current meanwhile.
	minRelistInterval = 5 * time.Second
	callTimeout       = 5 * time.Second
	// snapshotListTimeout bounds the first list of a resolver that has a
	// snapshot to start from instead.
	snapshotListTimeout = time.Second
)

// serviceWatch lists and watches one service's prefix for every resolver
// of that service, and publishes what it reads to them.
type serviceWatch struct {
	*published

	client   *clientv3.Client
	service  string
	prefix   string
	ns       string
	log      *slog.Logger
	observer Observer
	refs     int // guarded by Builder.mu

	snapshots     *snapshots           // nil unless the Builder keeps them
	snapshotTried bool                 // the snapshot was read (once, at start)
	saved         []discovery.Instance // the list last written to the snapshot
	saveErr       bool                 // the last write failed (and was logged)

	relist chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
}

func startWatch(b *Builder, service string, known snapshot) *serviceWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &serviceWatch{
		published: newPublished(known),
		client:    b.client,
		service:   service,
		prefix:    discovery.Prefix(b.namespace, service),
		ns:        b.namespace,
		log:       b.log.With("service", service),
		observer:  b.observers,
		snapshots: b.snapshots,
		relist:    make(chan struct{}, 1),
		cancel:    cancel,
		done:      make(chan struct{}),
	}
	go w.run(ctx)
	return w
}

func (w *serviceWatch) stop() {
	w.cancel()
	<-w.done
}

// requestRelist asks for a fresh list; requests are coalesced.
func (w *serviceWatch) requestRelist() {
	select {
	case w.relist <- struct{}{}:
	default:
	}
}

// state is what the loop knows of the prefix.
type state struct {
	byKey   map[string]discovery.Instance
	loss    historyLoss
	invalid invalidLog
}

func newState() *state {
	return &state{byKey: map[string]discovery.Instance{}, invalid: newInvalidLog()}
}

func (w *serviceWatch) run(ctx context.Context) {
	defer close(w.done)
	reconnected, waitNotify := reconnect.Start(ctx, w.client.ActiveConnection())
	defer waitNotify()

	st := newState()
	for _, inst := range w.current().instances {
		st.byKey[w.prefix+inst.ID] = inst
	}
	bo := backoff.Default()
	var lastList time.Time
	for {
		lastList = time.Now()
		timeout := callTimeout
		if w.snapshots != nil && !w.snapshotTried && !w.current().listed {
			// A snapshot is waiting: do not keep calls waiting as long for
			// an etcd that may be down.
			timeout = snapshotListTimeout
		}
		rev, err := w.list(ctx, st, timeout)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			w.log.Debug("listing instances failed; keeping the last list", "err", err)
			w.observer.ResolverEtcdError(w.service, "list", err)
			if snap := w.current(); !snap.listed && !w.startFromSnapshot(err) {
				w.publish(snapshot{err: err})
			}
			if !sleepOr(ctx, bo.Next(), reconnected) || !sleepOr(ctx, rand.N(reconnectSpread), nil) {
				return
			}
			continue
		}
		bo.Reset()
		reconnect.Drain(reconnected) // the list reached etcd after any reconnect so far
		err = w.watch(ctx, st, rev+1, lastList, reconnected)
		if ctx.Err() != nil {
			return
		}
		w.log.Debug("watch ended; listing again", "err", err)
		w.observer.WatchRestarted(w.service, restartReason(err))
	}
}

// errRelistRequested ends a watch for a ResolveNow; such lists are
// rate-limited, since gRPC asks whenever a connection fails.
var errRelistRequested = errors.New("relist requested")

// listPage is how many keys one request of a list reads: the values of a
// page are in memory at once, so however many keys a prefix holds, a list
// costs at most listPage times etcd's largest value (1.5 MiB by default).
const listPage = 256

// list reads the whole prefix, a page at a time at one revision, and
// publishes it, returning its revision. Each page has its own timeout, so
// a prefix of any size is listed in the end.
func (w *serviceWatch) list(ctx context.Context, st *state, timeout time.Duration) (int64, error) {
	byKey := map[string]discovery.Instance{}
	end := clientv3.GetPrefixRangeEnd(w.prefix)
	from, rev := w.prefix, int64(0)
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(listPage)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		callCtx, cancel := context.WithTimeout(ctx, timeout)
		resp, err := w.client.Get(callCtx, from, opts...)
		cancel()
		if err != nil {
			return 0, fmt.Errorf("list %s: %w", w.prefix, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
			st.loss.answered(rev, resp.Header.ClusterId)
		}
		for _, kv := range resp.Kvs {
			if inst, ok := w.decode(st, kv); ok {
				byKey[string(kv.Key)] = inst
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	if st.invalid.unlogged > 0 {
		w.log.Warn("skipped more instances whose etcd values are invalid, without a log line each",
			"count", st.invalid.unlogged, "prefix", w.prefix)
		st.invalid.unlogged = 0
	}
	if seen := st.loss.rev; st.loss.listed(rev, st.byKey) {
		w.log.Warn("etcd came back with an older history; keeping known instances while they register again",
			"revision", rev, "seen", seen, "grace", historyLossGrace)
	}
	st.byKey = byKey
	w.publishState(st)
	return rev, nil
}

// watch applies the prefix's changes from rev on, publishing once per
// response, until the watch fails, a relist is due, or ctx ends.
func (w *serviceWatch) watch(ctx context.Context, st *state, rev int64, lastList time.Time, reconnected <-chan struct{}) error {
	// WithRequireLeader: a member cut off from its cluster ends the watch
	// instead of leaving it silent.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	events := w.client.Watch(wctx, w.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev))
	var graceEnd, relistDue, relistSoon <-chan time.Time
	if t := st.loss.graceTimer(); t != nil {
		defer t.Stop()
		graceEnd = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-w.relist:
			// Too soon after the last list: keep watching, list later.
			if wait := minRelistInterval - time.Since(lastList); wait > 0 {
				if relistDue == nil {
					relistDue = time.After(wait)
				}
				continue
			}
			return errRelistRequested
		case <-relistDue:
			return errRelistRequested
		case <-reconnected:
			// etcd may have come back empty or older, and a wiped etcd may
			// already be past the revision the watch resumes from: only a
			// list tells. A random part of reconnectSpread first, so that
			// the clients that all see etcd return do not list at once.
			if relistSoon == nil {
				relistSoon = time.After(rand.N(reconnectSpread))
			}
		case <-relistSoon:
			return errReconnected
		case <-graceEnd:
			graceEnd = nil
			st.loss.endGrace()
			w.publishState(st)
		case resp, ok := <-events:
			if !ok {
				return errWatchClosed
			}
			if resp.CompactRevision != 0 {
				return fmt.Errorf("%w at revision %d", errWatchCompacted, resp.CompactRevision)
			}
			if err := resp.Err(); err != nil {
				w.observer.ResolverEtcdError(w.service, "watch", err)
				return fmt.Errorf("watch: %w", err)
			}
			if resp.IsProgressNotify() {
				continue
			}
			for _, ev := range resp.Events {
				w.apply(st, ev.Kv, ev.Type == clientv3.EventTypeDelete)
			}
			st.loss.watched(resp.Header.Revision)
			w.publishState(st)
		}
	}
}

// apply records one key's value or deletion. A value that does not parse
// removes the key's instance.
func (w *serviceWatch) apply(st *state, kv *mvccpb.KeyValue, deleted bool) {
	key := string(kv.Key)
	if deleted {
		delete(st.byKey, key)
		return
	}
	if inst, ok := w.decode(st, kv); ok {
		st.byKey[key] = inst
	} else {
		delete(st.byKey, key)
	}
}

// decode parses one key's value; an invalid one is logged, rate-limited,
// naming the key.
func (w *serviceWatch) decode(st *state, kv *mvccpb.KeyValue) (discovery.Instance, bool) {
	inst, err := discovery.Decode(w.ns, w.service, string(kv.Key), kv.Value)
	if err != nil {
		if st.invalid.allow() {
			w.log.Warn("skipping an instance whose etcd value is invalid", "err", err)
		}
		return discovery.Instance{}, false
	}
	return inst, true
}

// sleepOr waits d, or until ctx ends or wake fires; it reports whether
// ctx is still live.
func sleepOr(ctx context.Context, d time.Duration, wake <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-wake:
	case <-t.C:
	}
	return true
}
