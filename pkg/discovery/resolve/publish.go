package resolve

import (
	"slices"
	"sync"

	"github.com/rollcall/rollcall/pkg/discovery"
)

// snapshot is one version of a service's instance list.
type snapshot struct {
	version   uint64
	listed    bool                 // a list was published: from etcd, or a snapshot
	instances []discovery.Instance // sorted by ID, one per address; never modified once published
	err       error                // why no list could be read, while !listed
}

// published holds the last snapshot of a service, which its resolvers read
// and wait on: the watch publishes, each resolver pushes what it has not
// pushed yet.
type published struct {
	mu      sync.Mutex
	snap    snapshot
	changed chan struct{} // closed when the next snapshot is published
}

func newPublished(known snapshot) *published {
	return &published{snap: known, changed: make(chan struct{})}
}

// watchSnapshot returns the latest snapshot and a channel closed when the
// next one is published.
func (p *published) watchSnapshot() (snapshot, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.snap, p.changed
}

// publish makes s the latest snapshot, with the next version.
func (p *published) publish(s snapshot) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s.version = p.snap.version + 1
	p.snap = s
	close(p.changed)
	p.changed = make(chan struct{})
}

// current returns the latest snapshot.
func (p *published) current() snapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.snap
}

// publishState publishes st's instances, with those kept through a
// history loss, sorted by ID and with one instance per address.
func (w *serviceWatch) publishState(st *state) {
	// Sort keys, not Instances: strings move cheaply, structs do not.
	keys := make([]string, 0, len(st.byKey)+len(st.loss.carried))
	for key := range st.byKey {
		keys = append(keys, key)
	}
	keys = st.loss.appendCarriedKeys(keys, st.byKey)
	slices.Sort(keys) // one prefix, so key order is ID order
	seen := make(map[string]bool, len(keys))
	list := make([]discovery.Instance, 0, len(keys))
	for _, key := range keys {
		inst, ok := st.byKey[key]
		if !ok {
			inst = st.loss.carried[key]
		}
		if !seen[inst.Addr] {
			seen[inst.Addr] = true
			list = append(list, inst)
		}
	}
	w.publishList(list)
	w.save(list)
}

// publishList hands list to the resolvers and tells the observer.
func (w *serviceWatch) publishList(list []discovery.Instance) {
	w.publish(snapshot{listed: true, instances: list})
	w.observer.ResolverUpdated(w.service, list)
}
