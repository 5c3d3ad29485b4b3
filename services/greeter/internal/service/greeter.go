// Package service implements the greeter's gRPC API over its business
// rules (package biz): it turns requests into calls of biz and answers
// into responses, and injects the faults of demos and benchmarks. It
// knows nothing of how it is served or discovered.
package service

import (
	"context"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/google/wire"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	greeterv1 "github.com/rollcall/rollcall/api/greeter/v1"
	"github.com/rollcall/rollcall/services/greeter/internal/biz"
)

// ProviderSet is the service layer's providers.
var ProviderSet = wire.NewSet(NewGreeter)

// MaxStreamCount caps the greetings one StreamHellos call sends.
const MaxStreamCount = 100

// Greeter answers the greeter API with biz's greetings.
type Greeter struct {
	greeterv1.UnimplementedGreeterServiceServer
	greeter *biz.Greeter
	faults  Faults
	outage  *Outage
	calls   atomic.Int64 // SayHello calls so far, while WarmupCalls counts them
}

var _ greeterv1.GreeterServiceServer = (*Greeter)(nil)

// Faults are the artificial misbehaviours of a demo or benchmark
// instance; the zero value has none.
type Faults struct {
	// Latency delays every answer.
	Latency time.Duration
	// FailRate is the share of SayHello calls answered with FailCode
	// (after Latency, as an application's error would be).
	FailRate float64
	FailCode codes.Code
	// WarmupCalls: the first this many SayHello calls take ten times
	// Latency, as on a cold instance (empty caches, a JIT warming up).
	WarmupCalls int
}

// coldFactor is how much slower a warming-up instance answers.
const coldFactor = 10

// Outage is the switch of a failure drill: while it is on, every SayHello
// call fails with UNAVAILABLE, as on an instance that lost a dependency.
// Its zero value is off.
type Outage struct{ on atomic.Bool }

// Set turns the outage on or off.
func (o *Outage) Set(on bool) { o.on.Store(on) }

// NewGreeter returns a Greeter that answers with greeter's greetings,
// with faults, failing while outage is on (never, when nil).
func NewGreeter(greeter *biz.Greeter, faults Faults, outage *Outage) *Greeter {
	if outage == nil {
		outage = new(Outage)
	}
	return &Greeter{greeter: greeter, faults: faults, outage: outage}
}

// SayHello answers "Hello <name> from <instance>".
func (g *Greeter) SayHello(ctx context.Context, req *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error) {
	if g.outage.on.Load() {
		return nil, status.Error(codes.Unavailable, "outage drill: every call fails")
	}
	if err := sleep(ctx, g.nextLatency()); err != nil {
		return nil, err
	}
	if g.faults.FailRate > 0 && rand.Float64() < g.faults.FailRate {
		return nil, status.Errorf(g.faults.FailCode, "injected failure (fail-rate %v)", g.faults.FailRate)
	}
	greeting := g.greeter.Greet(req.GetName())
	return &greeterv1.SayHelloResponse{Message: greeting.Message, InstanceId: greeting.InstanceID}, nil
}

// StreamHellos sends count greetings, each after the artificial latency.
func (g *Greeter) StreamHellos(req *greeterv1.StreamHellosRequest, stream greeterv1.GreeterService_StreamHellosServer) error {
	if req.GetCount() > MaxStreamCount {
		return status.Errorf(codes.InvalidArgument, "count %d is over %d", req.GetCount(), MaxStreamCount)
	}
	for i := range req.GetCount() {
		if err := sleep(stream.Context(), g.faults.Latency); err != nil {
			return err
		}
		greeting := g.greeter.Greet(req.GetName())
		if err := stream.Send(&greeterv1.StreamHellosResponse{Message: greeting.Message, Index: i, InstanceId: greeting.InstanceID}); err != nil {
			return err
		}
	}
	return nil
}

// nextLatency is the artificial latency of the next SayHello call: ten
// times Latency while warming up. Once warm, it costs a load: the count
// would otherwise be a shared write on every call.
func (g *Greeter) nextLatency() time.Duration {
	if n := int64(g.faults.WarmupCalls); n > 0 && g.calls.Load() < n && g.calls.Add(1) <= n {
		return coldFactor * g.faults.Latency
	}
	return g.faults.Latency
}

// sleep waits d, or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
}
