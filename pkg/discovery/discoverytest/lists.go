package discoverytest

import (
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/discovery/resolve"
)

// Lists records, per service, the IDs of every list a resolver publishes
// and the reasons its watch restarted, so that a test awaits the list it
// expects instead of sleeping. Give it to a Builder with
// resolve.WithObserver(l.Observer()).
type Lists struct {
	mu       sync.Mutex
	seen     map[string][][]string // service -> lists of IDs, in order
	restarts map[string][]string   // service -> reasons, in order
	changed  chan struct{}         // closed at the next list
	awaited  map[string]int        // service -> lists AwaitLen has passed
}

// NewLists returns an empty recorder.
func NewLists() *Lists {
	return &Lists{seen: map[string][][]string{}, restarts: map[string][]string{}, changed: make(chan struct{}), awaited: map[string]int{}}
}

// Observer returns the resolve.Observer that records into l.
func (l *Lists) Observer() resolve.Observer { return listsObserver{l} }

type listsObserver struct{ *Lists }

func (o listsObserver) ResolverUpdated(service string, instances []discovery.Instance) {
	o.record(service, instances)
}

func (o listsObserver) WatchRestarted(service, reason string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.restarts[service] = append(o.restarts[service], reason)
}

func (listsObserver) ResolverEtcdError(string, string, error) {}

// Restarts returns the reasons the watch of service restarted, in order.
func (l *Lists) Restarts(service string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.restarts[service])
}

func (l *Lists) record(service string, instances []discovery.Instance) {
	ids := make([]string, len(instances))
	for i, inst := range instances {
		ids[i] = inst.ID
	}
	l.mu.Lock()
	l.seen[service] = append(l.seen[service], ids)
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

// Await waits, up to 20 s, until the latest list of service has exactly
// ids, in order; with no ids, until a list was published and the latest
// is empty.
func (l *Lists) Await(tb testing.TB, service string, ids ...string) {
	tb.Helper()
	want := strings.Join(ids, ",")
	timeout := time.After(20 * time.Second)
	for {
		l.mu.Lock()
		all := l.seen[service]
		var got string
		if len(all) > 0 {
			got = strings.Join(all[len(all)-1], ",")
		}
		changed := l.changed
		l.mu.Unlock()
		if got == want && len(all) > 0 {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			tb.Fatalf("list of %s never became [%s]; last [%s]", service, want, got)
		}
	}
}

// AwaitLen waits, up to 20 s, until a list of n instances of service is
// published after the one the last AwaitLen of service returned on.
func (l *Lists) AwaitLen(tb testing.TB, service string, n int) {
	tb.Helper()
	timeout := time.After(20 * time.Second)
	for {
		l.mu.Lock()
		all, changed := l.seen[service], l.changed
		for i := l.awaited[service]; i < len(all); i++ {
			if len(all[i]) == n {
				l.awaited[service] = i + 1
				l.mu.Unlock()
				return
			}
		}
		l.awaited[service] = len(all)
		l.mu.Unlock()
		select {
		case <-changed:
		case <-timeout:
			tb.Fatalf("the resolver never published a list of %d instances of %s", n, service)
		}
	}
}

// History returns the lists of service published so far, in order.
func (l *Lists) History(service string) [][]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.seen[service])
}
