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

// epoch anchors heartbeat ages to the monotonic clock: a step of the wall
// clock (NTP) must not make every instance look stalled.
var epoch = time.Now()

func sinceEpoch() time.Duration { return time.Since(epoch) }

// liveness is a subchannel producer that watches the heartbeat. gRPC
// closes producers whenever the subchannel changes state, so one lives
// only as long as a connection.
type liveness struct {
	// beating: the server answered the watch with a status it knows, so
	// it sends heartbeats (a server without rollcall's health service
	// answers SERVICE_UNKNOWN once and then nothing).
	beating atomic.Bool
	last    atomic.Int64 // sinceEpoch at the last heartbeat
	// overdueSeen: the timer found the heartbeat overdue, and not because
	// the client itself was paused; cleared by the next heartbeat. Picks
	// read it rather than the age alone, which a client's own pause
	// inflates.
	overdueSeen atomic.Bool
	// onStall is told when a heartbeat is overdue, so that the attempts
	// in flight on the instance can be cut at once.
	onStall atomic.Pointer[addrState]
	timer   *time.Timer
	armedAt atomic.Int64 // sinceEpoch when timer was last set
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
	l.timer = time.AfterFunc(time.Hour, l.overdue)
	l.timer.Stop()
	go l.run(ctx, healthpb.NewHealthClient(cc))
	var once sync.Once
	return l, func() {
		once.Do(func() {
			cancel()
			<-l.done
			l.timer.Stop()
		})
	}
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
				now := sinceEpoch()
				prev := time.Duration(l.last.Swap(int64(now)))
				l.overdueSeen.Store(false)
				if resp.GetStatus() != healthpb.HealthCheckResponse_SERVICE_UNKNOWN {
					l.beating.Store(true)
				}
				if st := l.onStall.Load(); st != nil && prev != 0 && now-prev > stallAfter {
					st.resumed() // beating again after a stall
				}
				if l.beating.Load() && ctx.Err() == nil {
					l.arm(stallAfter)
				}
			}
		}
		l.timer.Stop() // no stream, no heartbeat to wait for
		select {       // the subchannel is not ready yet, or the server went away
		case <-ctx.Done():
		case <-time.After(LivenessInterval):
		}
	}
}

func (l *liveness) arm(d time.Duration) {
	l.armedAt.Store(int64(sinceEpoch() + d))
	l.timer.Reset(d)
}

// overdue runs when no heartbeat came for stallAfter. A timer that fires
// much later than it was set for says the client itself was paused (GC,
// CPU starvation): the heartbeats may be waiting to be read, so it waits
// one interval more rather than call the instance stalled.
func (l *liveness) overdue() {
	now := sinceEpoch()
	if late := now - time.Duration(l.armedAt.Load()); late > LivenessInterval {
		l.arm(LivenessInterval)
		return
	}
	if !l.beating.Load() || now-time.Duration(l.last.Load()) <= stallAfter {
		return
	}
	l.overdueSeen.Store(true)
	if st := l.onStall.Load(); st != nil {
		st.stalledNow()
	}
}

// stalled reports whether a server that sends heartbeats has sent none
// for stallAfter, as the timer confirmed: a client that was paused itself
// (its timer late) does not call an instance stalled on silence its own
// pause explains. A server without heartbeats (not rollcall's) is never
// called stalled.
func (l *liveness) stalled(now time.Duration) bool {
	return l.overdueSeen.Load() && now-time.Duration(l.last.Load()) > stallAfter
}
