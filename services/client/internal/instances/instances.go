// Package instances follows the instances the client's resolver lists, for
// the live view: which are listed, what happened to the list (events), and,
// while Watch runs, each one's heartbeat (pkg/liveness), which tells an
// instance that is ready from one that stalled (SIGSTOP, a stuck host),
// drains (NOT_SERVING after SIGTERM) or cannot be reached.
package instances

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/liveness"
	"github.com/rollcall/rollcall/services/client/internal/config"
)

// States of a listed instance.
const (
	Ready       = "ready"       // heartbeats on time, SERVING
	Connecting  = "connecting"  // no heartbeat yet
	Stalled     = "stalled"     // heartbeats stopped; its connection stays open
	Draining    = "draining"    // its heartbeat says NOT_SERVING: it is stopping
	Unreachable = "unreachable" // its connection is down: killed, or a partition
)

// Kinds of events.
const (
	Registered      = "registered"
	Deregistered    = "deregistered"
	Reregistered    = "re-registered" // listed again after it left, or at a new address
	EtcdUnreachable = "etcd unreachable"
	EtcdReachable   = "etcd reachable"
)

// maxEvents bounds the events kept between two Takes.
const maxEvents = 64

// Event is a change in the list, or in the resolver's link to etcd.
type Event struct {
	At       time.Time `json:"at"`
	Kind     string    `json:"event"`
	Instance string    `json:"instance,omitempty"`
	Detail   string    `json:"detail,omitempty"` // the instance's address, or etcd's error
}

// Instance is a listed instance and its state.
type Instance struct {
	ID, Addr, State string
}

// Tracker is a resolve.Observer of the service the client calls. It is
// safe for concurrent use.
type Tracker struct {
	service  string
	dialOpts []grpc.DialOption

	mu       sync.Mutex
	listed   map[string]string // ID -> address, as last published
	ever     map[string]bool   // IDs listed at some time
	events   []Event
	etcdDown bool
	watches  map[string]*watch // by ID, while Watch runs
	changed  chan struct{}     // one pending wake-up of Watch
}

// watch is the heartbeat watch of one instance's own connection.
type watch struct {
	addr string
	conn *grpc.ClientConn
	beat *liveness.Watch
	stop func()
}

// New returns a tracker of cfg's service. Heartbeat connections use cfg's
// TLS, and the service's name as authority, as calls do.
func New(cfg config.Target) (*Tracker, error) {
	creds := insecure.NewCredentials()
	if cfg.TLS.Set() {
		tlsCfg, err := cfg.TLS.Client()
		if err != nil {
			return nil, fmt.Errorf("instances of %s: TLS: %w", cfg.Service, err)
		}
		creds = credentials.NewTLS(tlsCfg)
	}
	return &Tracker{
		service:  cfg.Service,
		dialOpts: []grpc.DialOption{grpc.WithTransportCredentials(creds), grpc.WithAuthority(cfg.Service), grpc.WithNoProxy()},
		listed:   map[string]string{},
		ever:     map[string]bool{},
		watches:  map[string]*watch{},
		changed:  make(chan struct{}, 1),
	}, nil
}

// ResolverUpdated records how the list changed.
func (t *Tracker) ResolverUpdated(service string, list []discovery.Instance) {
	if service != t.service {
		return
	}
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.etcdDown {
		t.etcdDown = false
		t.add(Event{At: now, Kind: EtcdReachable})
	}
	next := make(map[string]string, len(list))
	for _, in := range list {
		next[in.ID] = in.Addr
		addr, listed := t.listed[in.ID]
		switch {
		case !listed && !t.ever[in.ID]:
			t.add(Event{At: now, Kind: Registered, Instance: in.ID, Detail: in.Addr})
		case !listed || addr != in.Addr:
			t.add(Event{At: now, Kind: Reregistered, Instance: in.ID, Detail: in.Addr})
		}
		t.ever[in.ID] = true
	}
	for _, id := range slices.Sorted(maps.Keys(t.listed)) {
		if _, ok := next[id]; !ok {
			t.add(Event{At: now, Kind: Deregistered, Instance: id, Detail: t.listed[id]})
		}
	}
	t.listed = next
	select {
	case t.changed <- struct{}{}:
	default:
	}
}

// WatchRestarted does nothing: a restarted watch lists again, and
// ResolverUpdated tells what changed.
func (t *Tracker) WatchRestarted(string, string) {}

// ResolverEtcdError records the first failure after etcd answered.
func (t *Tracker) ResolverEtcdError(service, op string, err error) {
	if service != t.service {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.etcdDown {
		t.etcdDown = true
		t.add(Event{At: time.Now(), Kind: EtcdUnreachable, Detail: op + ": " + err.Error()})
	}
}

// add appends e; the caller holds mu.
func (t *Tracker) add(e Event) {
	if len(t.events) == maxEvents {
		t.events = slices.Delete(t.events, 0, 1)
	}
	t.events = append(t.events, e)
}

// Take returns the listed instances, sorted by ID, with their states, and
// the events since the previous Take. Without Watch running, every listed
// instance is Ready.
func (t *Tracker) Take() ([]Instance, []Event) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := liveness.Now()
	list := make([]Instance, 0, len(t.listed))
	for _, id := range slices.Sorted(maps.Keys(t.listed)) {
		in := Instance{ID: id, Addr: t.listed[id], State: Ready}
		if w := t.watches[id]; w != nil && w.addr == in.Addr {
			in.State = w.state(now)
		}
		list = append(list, in)
	}
	events := t.events
	t.events = nil
	return list, events
}

// state reads the instance's state from its connection and heartbeat.
func (w *watch) state(now time.Duration) string {
	status, conn := w.beat.Status(), w.conn.GetState()
	beaten := status != healthpb.HealthCheckResponse_UNKNOWN
	switch {
	case conn == connectivity.TransientFailure || beaten && conn != connectivity.Ready:
		return Unreachable
	case !beaten:
		return Connecting
	case status == healthpb.HealthCheckResponse_NOT_SERVING:
		return Draining
	case w.beat.Stalled(now):
		return Stalled
	}
	return Ready
}

// Watch keeps a heartbeat watch on each listed instance, over a connection
// of its own, until ctx ends; then it stops them and returns.
func (t *Tracker) Watch(ctx context.Context) {
	defer t.sync(nil)
	for {
		t.mu.Lock()
		want := maps.Clone(t.listed)
		t.mu.Unlock()
		t.sync(want)
		select {
		case <-ctx.Done():
			return
		case <-t.changed:
		}
	}
}

// sync starts a watch for each instance in want and stops every other.
func (t *Tracker) sync(want map[string]string) {
	t.mu.Lock()
	var stale []*watch
	for id, w := range t.watches {
		if want[id] != w.addr {
			stale = append(stale, w)
			delete(t.watches, id)
		}
	}
	var missing []string
	for id := range want {
		if t.watches[id] == nil {
			missing = append(missing, id)
		}
	}
	t.mu.Unlock()
	for _, w := range stale {
		w.stop()
		w.conn.Close()
	}
	for _, id := range missing {
		conn, err := grpc.NewClient("passthrough:///"+want[id], t.dialOpts...)
		if err != nil {
			continue // an address grpc cannot parse: its state stays Ready, as calls will tell
		}
		beat, stop := liveness.WatchConn(conn)
		t.mu.Lock()
		t.watches[id] = &watch{addr: want[id], conn: conn, beat: beat, stop: stop}
		t.mu.Unlock()
	}
}
