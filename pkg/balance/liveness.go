package balance

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/balancer"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// LivenessService is the health service name on which rollcall servers
// (pkg/serve) send a heartbeat every LivenessInterval. A process that is
// stopped (SIGSTOP) or stuck keeps its TCP connections open and its health
// status unchanged; only a missing heartbeat tells.
const (
	LivenessService  = "rollcall.liveness"
	LivenessInterval = 100 * time.Millisecond
	// stallAfter: an instance that sent heartbeats before and none for
	// this long is stalled and gets no new calls until they resume.
	stallAfter = 4 * LivenessInterval
)

// liveness is a subchannel producer that watches the heartbeat. gRPC
// closes producers whenever the subchannel changes state, so one lives
// only as long as a connection; beating, shared by every liveness of an
// address, remembers that the server sends heartbeats at all.
type liveness struct {
	started time.Time
	beats   atomic.Int64 // heartbeats received
	last    atomic.Int64 // unix nanos of the last one
	beating atomic.Pointer[atomic.Bool]
	cancel  context.CancelFunc
	done    chan struct{}
}

type livenessBuilder struct{}

var livenessProducer balancer.ProducerBuilder = livenessBuilder{}

// Build starts watching the heartbeat over the subchannel cci; the
// returned func stops the watch and waits for it.
func (livenessBuilder) Build(cci any) (balancer.Producer, func()) {
	cc := cci.(grpc.ClientConnInterface)
	ctx, cancel := context.WithCancel(context.Background())
	l := &liveness{started: time.Now(), cancel: cancel, done: make(chan struct{})}
	go l.run(ctx, healthpb.NewHealthClient(cc))
	var once sync.Once
	return l, func() { once.Do(func() { cancel(); <-l.done }) }
}

func (l *liveness) run(ctx context.Context, client healthpb.HealthClient) {
	defer close(l.done)
	for ctx.Err() == nil {
		stream, err := client.Watch(ctx, &healthpb.HealthCheckRequest{Service: LivenessService})
		if err == nil {
			for {
				if _, err := stream.Recv(); err != nil {
					break
				}
				l.last.Store(time.Now().UnixNano())
				if l.beats.Add(1) >= 2 {
					if b := l.beating.Load(); b != nil {
						b.Store(true)
					}
				}
			}
		}
		select { // the subchannel is not ready yet, or the server went away
		case <-ctx.Done():
		case <-time.After(LivenessInterval):
		}
	}
}

// stalled reports whether a server known to send heartbeats has sent none
// for stallAfter. A server without heartbeats (not rollcall's) is never
// called stalled.
func (l *liveness) stalled(now time.Time) bool {
	b := l.beating.Load()
	if b == nil || !b.Load() {
		return false
	}
	last := l.started
	if n := l.last.Load(); n != 0 {
		last = time.Unix(0, n)
	}
	return now.Sub(last) > stallAfter
}
