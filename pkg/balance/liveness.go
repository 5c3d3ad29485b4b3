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
// only as long as a connection.
type liveness struct {
	// beating: the server answered the watch with a status it knows, so
	// it sends heartbeats (a server without rollcall's health service
	// answers SERVICE_UNKNOWN once and then nothing).
	beating atomic.Bool
	last    atomic.Int64 // unix nanos of the last heartbeat
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
	l := &liveness{cancel: cancel, done: make(chan struct{})}
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
				resp, err := stream.Recv()
				if err != nil {
					break
				}
				l.last.Store(time.Now().UnixNano())
				if resp.GetStatus() != healthpb.HealthCheckResponse_SERVICE_UNKNOWN {
					l.beating.Store(true)
				}
			}
		}
		select { // the subchannel is not ready yet, or the server went away
		case <-ctx.Done():
		case <-time.After(LivenessInterval):
		}
	}
}

// stalled reports whether a server that sends heartbeats has sent none
// for stallAfter. A server without them (not rollcall's) is never called
// stalled.
func (l *liveness) stalled(now time.Time) bool {
	return l.beating.Load() && now.Sub(time.Unix(0, l.last.Load())) > stallAfter
}
