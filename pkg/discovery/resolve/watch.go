package resolve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
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
	maxBackoff = time.Second
	// minRelistInterval rate-limits re-lists that gRPC asks for through
	// ResolveNow (it asks whenever a connection fails). The watch keeps
	// the list current meanwhile.
	minRelistInterval = 5 * time.Second
	// historyLossGrace is how long instances are kept after etcd came back
	// with an older history (wiped, replaced, restored from backup) without
	// them: long enough for live instances to register again.
	historyLossGrace = 10 * time.Second
	callTimeout      = 5 * time.Second
)

// snapshot is one version of a service's instance list.
type snapshot struct {
	version   uint64
	listed    bool                 // a list has been read from etcd
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
	refs     int // guarded by Builder.mu

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
		client:   b.client,
		service:  service,
		prefix:   discovery.Prefix(b.namespace, service),
		ns:       b.namespace,
		log:      b.log.With("service", service),
		onUpdate: b.onUpdate,
		relist:   make(chan struct{}, 1),
		cancel:   cancel,
		done:     make(chan struct{}),
		snap:     known,
		changed:  make(chan struct{}),
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
	// rev is the highest etcd revision seen, to notice a history loss.
	rev int64
	// skipped remembers which bad values were logged, by key and mod
	// revision, so each is logged once.
	skipped map[string]int64
}

func (w *serviceWatch) run(ctx context.Context) {
	defer close(w.done)
	reconnected := make(chan struct{}, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { reconnect.Notify(ctx, w.client.ActiveConnection(), reconnected) })

	st := &state{byKey: map[string]discovery.Instance{}, skipped: map[string]int64{}}
	for _, inst := range w.current().instances {
		st.byKey[w.prefix+inst.ID] = inst
	}
	bo := backoff.Backoff{Base: minBackoff, Max: maxBackoff}
	var lastList time.Time
	for {
		lastList = time.Now()
		rev, err := w.list(ctx, st)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			w.log.Debug("listing instances failed; keeping the last list", "err", err)
			if snap := w.current(); !snap.listed {
				w.publish(snapshot{err: err})
			}
			if !sleepOr(ctx, bo.Next(), reconnected) {
				return
			}
			continue
		}
		bo.Reset()
		err = w.watch(ctx, st, rev+1, lastList, reconnected)
		if ctx.Err() != nil {
			return
		}
		w.log.Debug("watch ended; listing again", "err", err)
	}
}

// errRelistRequested ends a watch for a ResolveNow; such lists are
// rate-limited, since gRPC asks whenever a connection fails.
var errRelistRequested = errors.New("relist requested")

// list reads the whole prefix and publishes it, returning its revision.
func (w *serviceWatch) list(ctx context.Context, st *state) (int64, error) {
	callCtx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := w.client.Get(callCtx, w.prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("list %s: %w", w.prefix, err)
	}
	rev := resp.Header.Revision
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
	st.byKey = make(map[string]discovery.Instance, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		w.apply(st, kv, false)
	}
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
	var graceEnd, relistDue <-chan time.Time
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
			// etcd may have come back empty or older: only a list tells.
			return errors.New("etcd connection re-established")
		case <-graceEnd:
			graceEnd = nil
			st.carried = nil
			w.publishState(st)
		case resp, ok := <-events:
			if !ok {
				return errors.New("watch channel closed")
			}
			if resp.CompactRevision != 0 {
				return fmt.Errorf("watch compacted at revision %d", resp.CompactRevision)
			}
			if err := resp.Err(); err != nil {
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
// removes the key's instance and is logged once, naming the key.
func (w *serviceWatch) apply(st *state, kv *mvccpb.KeyValue, deleted bool) {
	key := string(kv.Key)
	if deleted {
		delete(st.byKey, key)
		delete(st.skipped, key)
		return
	}
	inst, err := discovery.Decode(w.ns, w.service, key, kv.Value)
	if err != nil {
		delete(st.byKey, key)
		if st.skipped[key] != kv.ModRevision {
			st.skipped[key] = kv.ModRevision
			w.log.Warn("skipping an instance whose etcd value is invalid", "key", key, "err", err)
		}
		return
	}
	delete(st.skipped, key)
	st.byKey[key] = inst
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
