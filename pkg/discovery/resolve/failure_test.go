package resolve_test

import (
	"context"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/discovery/discoverytest"
)

// While etcd is down the resolver keeps the last list, calls go on, and
// once etcd is back the list follows it again.
func TestEtcdDownKeepsLastListThenFollowsAgain(t *testing.T) {
	srv, c, l := start(t)
	for _, id := range []string{"a", "b"} {
		registerBackend(t, c, "greeter", id)
	}
	b := newBuilder(t, c, l)
	cc := dialAndAwait(t, b, l, "a", "b")

	srv.Stop()
	if got := spread(t, cc, 20); got["a"] != 10 || got["b"] != 10 {
		t.Errorf("calls with etcd down spread %v, want 10 each", got)
	}
	// A channel built now, while etcd is down, starts from the list the
	// first one holds.
	late := dial(t, b, "greeter")
	awaitSpread(t, late, "a", "b")

	srv.Start()
	registerBackend(t, c, "greeter", "c")
	awaitList(t, l, cc, "a", "b", "c")
	assertNeverEmpty(t, l, "greeter")
}

// An etcd wiped and replaced by an empty one loses every key; instances
// register again, and meanwhile clients keep the ones they know.
func TestEtcdWipedKeepsInstancesWhileTheyRegisterAgain(t *testing.T) {
	srv, c, l := start(t)
	for _, id := range []string{"a", "b"} {
		registerBackend(t, c, "greeter", id)
	}
	// An instance nobody keeps registered: after the wipe it is gone for
	// good, and leaves the list once the grace period ends.
	gone, _ := discovery.Encode(discovery.Instance{Service: "greeter", ID: "gone", Addr: "127.0.0.1:1"})
	if _, err := c.Put(context.Background(), "rollcall/greeter/gone", string(gone)); err != nil {
		t.Fatal(err)
	}
	cc := dial(t, newBuilder(t, c, l), "greeter")
	l.Await(t, "greeter", "a", "b", "gone")
	awaitSpread(t, cc, "a", "b")

	srv.Wipe()
	registerBackend(t, c, "greeter", "c")
	l.Await(t, "greeter", "a", "b", "c", "gone")
	awaitSpread(t, cc, "a", "b", "c")
	l.Await(t, "greeter", "a", "b", "c")
	assertNeverEmpty(t, l, "greeter")
}

// A watch whose start revision was compacted lists again, for that
// reason, and loses no update: etcd changes, then compacts, between the
// resolver's list and its watch.
func TestCompactionBeforeTheWatchListsAgain(t *testing.T) {
	srv, writer, l := start(t)
	reader := srv.Client()
	gate := discoverytest.GateWatches(reader)
	ra := registerBackend(t, writer, "greeter", "a")
	registerBackend(t, writer, "greeter", "b")
	awaitKeys(t, writer, "rollcall/greeter/", "rollcall/greeter/a", "rollcall/greeter/b")
	cc := dial(t, newBuilder(t, reader, l), "greeter")
	select {
	case <-gate.Held():
	case <-time.After(20 * time.Second):
		t.Fatal("the resolver never watched")
	}
	l.Await(t, "greeter", "a", "b")

	discoverytest.Deregister(t, ra)
	registerBackend(t, writer, "greeter", "c")
	awaitKeys(t, writer, "rollcall/greeter/", "rollcall/greeter/b", "rollcall/greeter/c")
	srv.Compact(context.Background())
	gate.Open()

	awaitList(t, l, cc, "b", "c")
	if got := l.Restarts("greeter"); !slices.Contains(got, "compacted") {
		t.Errorf("watch restarts %q, want one for compaction", got)
	}
}

// A key deleted by hand comes back: the registration writes it again and
// the list follows.
func TestKeyDeletedByHandComesBack(t *testing.T) {
	_, c, l := start(t)
	r := registerBackend(t, c, "greeter", "a")
	registerBackend(t, c, "greeter", "b")
	cc := dial(t, newBuilder(t, c, l), "greeter")
	l.Await(t, "greeter", "a", "b")

	if _, err := c.Delete(context.Background(), r.Key()); err != nil {
		t.Fatal(err)
	}
	l.Await(t, "greeter", "b")
	awaitList(t, l, cc, "a", "b")
}

// A channel that went idle builds a new resolver on its next call; it
// starts from the last list even while etcd is down.
func TestNewResolverStartsFromLastKnownList(t *testing.T) {
	srv, c, l := start(t)
	registerBackend(t, c, "greeter", "a")
	b := newBuilder(t, c, l)
	first := dialAndAwait(t, b, l, "a")
	first.Close() // the last resolver of greeter closes, as in idle mode

	srv.Stop()
	awaitSpread(t, dial(t, b, "greeter"), "a")
}

// assertNeverEmpty fails if the resolver ever published an empty list
// after its first non-empty one.
func assertNeverEmpty(t *testing.T, l *discoverytest.Lists, service string) {
	t.Helper()
	h := l.History(service)
	start := slices.IndexFunc(h, func(ids []string) bool { return len(ids) > 0 })
	for i := max(start, 0); i < len(h); i++ {
		if len(h[i]) == 0 {
			t.Errorf("resolver published an empty list of %s (update %d of %v)", service, i, h)
			return
		}
	}
}

// awaitKeys waits, through an etcd watch, until prefix holds exactly keys.
func awaitKeys(t *testing.T, c *clientv3.Client, prefix string, keys ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20e9)
	defer cancel()
	for {
		resp, err := c.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			t.Fatalf("list %s: %v", prefix, err)
		}
		var got []string
		for _, kv := range resp.Kvs {
			got = append(got, string(kv.Key))
		}
		if slices.Equal(got, keys) {
			return
		}
		wch := c.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
		if _, ok := <-wch; !ok {
			t.Fatalf("keys under %s are %v, want %v", prefix, got, keys)
		}
	}
}
