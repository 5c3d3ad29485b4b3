package resolve

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/discovery/internal/backoff"
	"github.com/rollcall/rollcall/pkg/discovery/internal/reconnect"
)

// Timing of the list-and-watch loop.
const (
	minBackoff = 100 * time.Millisecond
	// maxBackoff bounds the wait between lists while etcd answers with
	// errors; while it is unreachable, its return (a reconnect) ends the
	// wait sooner.
	maxBackoff = 8 * time.Second
	// reconnectSpread: the list a reconnect triggers waits a random part
	// of it, so that every client that sees etcd return does not list in
	// the same instant.
	reconnectSpread = 250 * time.Millisecond
	// minRelistInterval rate-limits re-lists that gRPC asks for through
	// ResolveNow (it asks whenever a connection fails). The watch keeps
	// the list current meanwhile.
	minRelistInterval = 5 * time.Second
	// historyLossGrace is how long instances are kept after etcd came back
	// with an older history (wiped, replaced, restored from backup) without
	// them: long enough for live instances to register again.
	historyLossGrace = 10 * time.Second
	callTimeout      = 5 * time.Second
	// snapshotListTimeout bounds the first list of a resolver that has a
	// snapshot to start from instead.
	snapshotListTimeout = time.Second
)

// snapshot is one version of a service's instance list.
type snapshot struct {
	version   uint64
	listed    bool                 // a list was published: from etcd, or a snapshot
	instances []discovery.Instance // sorted by ID, one per address
	err       error                // why no list could be read, while !listed
}

// serviceWatch lists and watches one service's prefix for every resolver
// of that service.
type serviceWatch struct {
	client   *clientv3.Client
	service  string
	prefix   string
	ns       string
	log      *slog.Logger
	onUpdate func(string, []discovery.Instance)
	observer Observer
	refs     int // guarded by Builder.mu

	snapshots     *snapshots           // nil unless the Builder keeps them
	snapshotTried bool                 // the snapshot was read (once, at start)
	saved         []discovery.Instance // the list last written to the snapshot
	saveErr       bool                 // the last write failed (and was logged)

	relist chan struct{}
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	snap    snapshot
	changed chan struct{}
}

func startWatch(b *Builder, service string, known snapshot) *serviceWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &serviceWatch{
		client:    b.client,
		service:   service,
		prefix:    discovery.Prefix(b.namespace, service),
		ns:        b.namespace,
		log:       b.log.With("service", service),
		onUpdate:  b.onUpdate,
		observer:  b.observer,
		snapshots: b.snapshots,
		relist:    make(chan struct{}, 1),
		cancel:    cancel,
		done:      make(chan struct{}),
		snap:      known,
		changed:   make(chan struct{}),
	}
	go w.run(ctx)
	return w
}

func (w *serviceWatch) stop() {
	w.cancel()
	<-w.done
}

// current returns the latest snapshot.
func (w *serviceWatch) current() snapshot {
	s, _ := w.watchSnapshot()
	return s
}

// watchSnapshot returns the latest snapshot and a channel closed when the
// next one is published.
func (w *serviceWatch) watchSnapshot() (snapshot, <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.snap, w.changed
}

func (w *serviceWatch) publish(s snapshot) {
	w.mu.Lock()
	s.version = w.snap.version + 1
	w.snap = s
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
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
	byKey map[string]discovery.Instance
	// carried holds instances kept through a loss of etcd's history
	// until carryUntil.
	carried    map[string]discovery.Instance
	carryUntil time.Time
	// rev is the highest etcd revision seen and cluster the cluster that
	// answered, to notice a history loss.
	rev     int64
	cluster uint64
	// invalid rate-limits the log lines about invalid values.
	invalid invalidLog
}

// Invalid values in etcd are logged at most maxInvalidLogs at once, then
// invalidLogsPerSecond: a prefix full of garbage must not flood the log.
// The rest are counted, and the count is logged after each list.
const (
	maxInvalidLogs       = 10
	invalidLogsPerSecond = 0.1
)

type invalidLog struct {
	tokens   float64
	last     time.Time
	unlogged int
}

// allow reports whether one more invalid value may be logged now.
func (l *invalidLog) allow(now time.Time) bool {
	if l.last.IsZero() {
		l.tokens = maxInvalidLogs
	} else {
		l.tokens = min(maxInvalidLogs, l.tokens+now.Sub(l.last).Seconds()*invalidLogsPerSecond)
	}
	l.last = now
	if l.tokens < 1 {
		l.unlogged++
		return false
	}
	l.tokens--
	return true
}

func (w *serviceWatch) run(ctx context.Context) {
	defer close(w.done)
	reconnected := make(chan struct{}, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { reconnect.Notify(ctx, w.client.ActiveConnection(), reconnected) })

	st := &state{byKey: map[string]discovery.Instance{}}
	for _, inst := range w.current().instances {
		st.byKey[w.prefix+inst.ID] = inst
	}
	bo := backoff.Backoff{Base: minBackoff, Max: maxBackoff}
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
			if st.cluster != 0 && resp.Header.ClusterId != st.cluster {
				st.rev = max(st.rev, rev+1) // another cluster: its history is not the one seen
			}
			st.cluster = resp.Header.ClusterId
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
	if rev < st.rev {
		// etcd's history went back: it was wiped or replaced. Instances it
		// lost are alive and registering again; keep them meanwhile rather
		// than pushing an empty list that fails every call.
		w.log.Warn("etcd came back with an older history; keeping known instances while they register again",
			"revision", rev, "seen", st.rev, "grace", historyLossGrace)
		st.carried = st.byKey
		st.carryUntil = time.Now().Add(historyLossGrace)
	}
	st.rev = rev
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
	if len(st.carried) > 0 {
		t := time.NewTimer(time.Until(st.carryUntil))
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
			st.carried = nil
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
			st.rev = max(st.rev, resp.Header.Revision)
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
		if st.invalid.allow(time.Now()) {
			w.log.Warn("skipping an instance whose etcd value is invalid", "err", err)
		}
		return discovery.Instance{}, false
	}
	return inst, true
}

// publishState publishes st's instances, with carried ones still in grace,
// sorted by ID and with one instance per address.
func (w *serviceWatch) publishState(st *state) {
	// Sort keys, not Instances: strings move cheaply, structs do not.
	keys := make([]string, 0, len(st.byKey)+len(st.carried))
	for key := range st.byKey {
		keys = append(keys, key)
	}
	for key := range st.carried {
		if _, ok := st.byKey[key]; !ok {
			keys = append(keys, key)
		}
	}
	slices.Sort(keys) // one prefix, so key order is ID order
	seen := make(map[string]bool, len(keys))
	list := make([]discovery.Instance, 0, len(keys))
	for _, key := range keys {
		inst, ok := st.byKey[key]
		if !ok {
			inst = st.carried[key]
		}
		if !seen[inst.Addr] {
			seen[inst.Addr] = true
			list = append(list, inst)
		}
	}
	w.publish(snapshot{listed: true, instances: list})
	w.save(list)
	w.observer.ResolverUpdated(w.service, len(list))
	if w.onUpdate != nil {
		w.onUpdate(w.service, slices.Clone(list))
	}
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

// startFromSnapshot publishes the saved list, when there is one young
// enough, because etcd could not be read (err) before any list; it
// reports whether it did. It reads the file once: a missing or unusable
// one is not read again at every retry. etcd's list replaces it when etcd answers.
func (w *serviceWatch) startFromSnapshot(err error) bool {
	if w.snapshots == nil || w.snapshotTried {
		return false
	}
	w.snapshotTried = true
	list, written, lerr := w.snapshots.load(w.ns, w.service, time.Now())
	if lerr != nil {
		if !errors.Is(lerr, fs.ErrNotExist) {
			w.log.Warn("etcd is unreachable and the snapshot of the list cannot be used", "err", lerr)
		}
		return false
	}
	slices.SortFunc(list, func(a, b discovery.Instance) int { return strings.Compare(a.ID, b.ID) })
	w.log.Warn("etcd is unreachable: starting from the list saved before, until etcd answers",
		"instances", len(list), "saved", written.Format(time.RFC3339), "age", time.Since(written).Round(time.Second), "err", err)
	w.saved = list
	w.publish(snapshot{listed: true, instances: list})
	w.observer.ResolverUpdated(w.service, len(list))
	if w.onUpdate != nil {
		w.onUpdate(w.service, slices.Clone(list))
	}
	return true
}

// save writes list to the snapshot when it changed; a failure is logged
// once until a write succeeds again.
func (w *serviceWatch) save(list []discovery.Instance) {
	if w.snapshots == nil || w.saved != nil && slices.EqualFunc(list, w.saved, func(a, b discovery.Instance) bool { return a.Equal(b) }) {
		return
	}
	if err := w.snapshots.save(w.ns, w.service, list); err != nil {
		if !w.saveErr {
			w.log.Warn("cannot save the snapshot of the list", "err", err)
		}
		w.saveErr = true
		return
	}
	w.saved, w.saveErr = list, false
}
