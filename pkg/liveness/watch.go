package liveness

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/balancer"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// A Listener is told when a watched instance stops sending heartbeats and
// when it sends them again.
type Listener interface {
	// Stalled: a heartbeat is overdue, so the attempts in flight on the
	// instance can be cut at once. It runs on a timer's goroutine and
	// must not block.
	Stalled()
	// Resumed: the instance beats again after a stall.
	Resumed()
}

// A Watch watches the heartbeat of one connection. It is a subchannel
// producer, and gRPC closes producers whenever the subchannel changes
// state, so one lives only as long as a connection.
type Watch struct {
	// beating: the server answered the watch with a status it knows, so
	// it sends heartbeats (a server without rollcall's health service
	// answers SERVICE_UNKNOWN once and then nothing).
	beating atomic.Bool
	last    atomic.Int64 // Now at the last heartbeat
	status  atomic.Int32 // of the last heartbeat: a healthpb serving status
	// overdueSeen: the timer found the heartbeat overdue, and not because
	// the client itself was paused; cleared by the next heartbeat. Picks
	// read it rather than the age alone, which a client's own pause
	// inflates.
	overdueSeen atomic.Bool
	listener    atomic.Pointer[Listener]
	timer       *time.Timer
	armedAt     atomic.Int64 // Now when timer was last set
	cancel      context.CancelFunc
	done        chan struct{}
}

// WatchSubConn returns the heartbeat watch of sc's connection, starting it
// if none runs. Call it when sc becomes ready: gRPC stops the watch on
// sc's next state change.
func WatchSubConn(sc balancer.SubConn) *Watch {
	p, _ := sc.GetOrBuildProducer(producer)
	return p.(*Watch)
}

// WatchConn watches the heartbeat of the server at the other end of conn,
// as a balancer does over a subchannel, for a tool that dials an instance
// directly (a live view of instances). stop ends the watch and waits for
// it.
func WatchConn(conn grpc.ClientConnInterface) (w *Watch, stop func()) {
	p, stop := producer.Build(conn)
	return p.(*Watch), stop
}

// Status is the serving status the last heartbeat carried (UNKNOWN before
// the first): NOT_SERVING once the server began to stop.
func (w *Watch) Status() healthpb.HealthCheckResponse_ServingStatus {
	return healthpb.HealthCheckResponse_ServingStatus(w.status.Load())
}

// SetListener makes w tell l of stalls and resumes.
func (w *Watch) SetListener(l Listener) { w.listener.Store(&l) }

func (w *Watch) tell() Listener {
	if l := w.listener.Load(); l != nil {
		return *l
	}
	return nil
}

type producerBuilder struct{}

var producer balancer.ProducerBuilder = producerBuilder{}

// Build starts watching the heartbeat over the subchannel cci; the
// returned func stops the watch and waits for it.
func (producerBuilder) Build(cci any) (balancer.Producer, func()) {
	cc := cci.(grpc.ClientConnInterface)
	ctx, cancel := context.WithCancel(context.Background())
	w := &Watch{cancel: cancel, done: make(chan struct{})}
	w.timer = time.AfterFunc(time.Hour, w.overdue)
	w.timer.Stop()
	go w.run(ctx, healthpb.NewHealthClient(cc))
	var once sync.Once
	return w, func() {
		once.Do(func() {
			cancel()
			<-w.done
			w.timer.Stop()
		})
	}
}

func (w *Watch) run(ctx context.Context, client healthpb.HealthClient) {
	defer close(w.done)
	for ctx.Err() == nil {
		stream, err := client.Watch(ctx, &healthpb.HealthCheckRequest{Service: Service})
		if err == nil {
			for {
				resp, err := stream.Recv()
				if err != nil {
					break
				}
				now := Now()
				prev := time.Duration(w.last.Swap(int64(now)))
				w.status.Store(int32(resp.GetStatus()))
				w.overdueSeen.Store(false)
				if resp.GetStatus() != healthpb.HealthCheckResponse_SERVICE_UNKNOWN {
					w.beating.Store(true)
				}
				if l := w.tell(); l != nil && prev != 0 && now-prev > stallAfter {
					l.Resumed() // beating again after a stall
				}
				if w.beating.Load() && ctx.Err() == nil {
					w.arm(stallAfter)
				}
			}
		}
		w.timer.Stop() // no stream, no heartbeat to wait for
		select {       // the subchannel is not ready yet, or the server went away
		case <-ctx.Done():
		case <-time.After(Interval):
		}
	}
}

func (w *Watch) arm(d time.Duration) {
	w.armedAt.Store(int64(Now() + d))
	w.timer.Reset(d)
}

// overdue runs when no heartbeat came for stallAfter. A timer that fires
// much later than it was set for says the client itself was paused (GC,
// CPU starvation): the heartbeats may be waiting to be read, so it waits
// one interval more rather than call the instance stalled.
func (w *Watch) overdue() {
	now := Now()
	if late := now - time.Duration(w.armedAt.Load()); late > Interval {
		w.arm(Interval)
		return
	}
	if !w.beating.Load() || now-time.Duration(w.last.Load()) <= stallAfter {
		return
	}
	w.overdueSeen.Store(true)
	if l := w.tell(); l != nil {
		l.Stalled()
	}
}

// Stalled reports whether a server that sends heartbeats has sent none
// for stallAfter at now (on Now's clock), as the timer confirmed: a client
// that was paused itself (its timer late) does not call an instance
// stalled on silence its own pause explains. A server without heartbeats
// (not rollcall's) is never called stalled.
func (w *Watch) Stalled(now time.Duration) bool {
	return w.overdueSeen.Load() && now-time.Duration(w.last.Load()) > stallAfter
}
