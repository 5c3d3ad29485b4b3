// Package service implements the greeter's API: the business logic, with
// no knowledge of how it is served or discovered.
package service

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/google/wire"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	greeterv1 "github.com/rollcall/rollcall/api/greeter/v1"
	"github.com/rollcall/rollcall/pkg/discovery"
)

// ProviderSet is the service layer's providers.
var ProviderSet = wire.NewSet(NewGreeter)

// MaxStreamCount caps the greetings one StreamHellos call sends.
const MaxStreamCount = 100

// Greeter answers greetings, naming the instance that answered.
type Greeter struct {
	greeterv1.UnimplementedGreeterServiceServer
	self   string // "<id> (<addr>)"
	id     string
	faults Faults
	outage atomic.Bool
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
}

// NewGreeter returns a Greeter that answers as inst, with faults.
func NewGreeter(inst discovery.Instance, faults Faults) *Greeter {
	return &Greeter{self: fmt.Sprintf("%s (%s)", inst.ID, inst.Addr), id: inst.ID, faults: faults}
}

// SetOutage makes every SayHello call fail with UNAVAILABLE while on, as
// an instance that lost a dependency would: for failure drills.
func (g *Greeter) SetOutage(on bool) { g.outage.Store(on) }

// SayHello answers "Hello <name> from <instance>".
func (g *Greeter) SayHello(ctx context.Context, req *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error) {
	if g.outage.Load() {
		return nil, status.Error(codes.Unavailable, "outage drill: every call fails")
	}
	if err := g.wait(ctx); err != nil {
		return nil, err
	}
	if g.faults.FailRate > 0 && rand.Float64() < g.faults.FailRate {
		return nil, status.Errorf(g.faults.FailCode, "injected failure (fail-rate %v)", g.faults.FailRate)
	}
	return &greeterv1.SayHelloResponse{Message: g.greet(req.GetName()), InstanceId: g.id}, nil
}

// StreamHellos sends count greetings, each after the artificial latency.
func (g *Greeter) StreamHellos(req *greeterv1.StreamHellosRequest, stream greeterv1.GreeterService_StreamHellosServer) error {
	if req.GetCount() > MaxStreamCount {
		return status.Errorf(codes.InvalidArgument, "count %d is over %d", req.GetCount(), MaxStreamCount)
	}
	for i := range req.GetCount() {
		if err := g.wait(stream.Context()); err != nil {
			return err
		}
		if err := stream.Send(&greeterv1.StreamHellosResponse{Message: g.greet(req.GetName()), Index: i, InstanceId: g.id}); err != nil {
			return err
		}
	}
	return nil
}

func (g *Greeter) greet(name string) string {
	if name == "" {
		name = "stranger"
	}
	return fmt.Sprintf("Hello %s from %s", name, g.self)
}

func (g *Greeter) wait(ctx context.Context) error {
	if g.faults.Latency <= 0 {
		return nil
	}
	t := time.NewTimer(g.faults.Latency)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
}
