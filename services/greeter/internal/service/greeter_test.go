package service_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	greeterv1 "github.com/rollcall/rollcall/api/greeter/v1"
	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/services/greeter/internal/biz"
	"github.com/rollcall/rollcall/services/greeter/internal/service"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var self = discovery.Instance{Service: "greeter", ID: "g1", Addr: "10.0.0.1:50051"}

// greeter is the service on a gRPC server on 127.0.0.1, and a client of
// it connected to it. started receives a value when a handler starts,
// handled the code it returned, as the server saw them (the latest few).
type greeter struct {
	client           greeterv1.GreeterServiceClient
	started, handled chan codes.Code
}

// note sends code on ch unless ch is full: tests that make many calls
// read none of them.
func note(ch chan codes.Code, code codes.Code) {
	select {
	case ch <- code:
	default:
	}
}

func serve(t *testing.T, faults service.Faults, outage *service.Outage) *greeter {
	t.Helper()
	g := &greeter{started: make(chan codes.Code, 1), handled: make(chan codes.Code, 1)}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			note(g.started, codes.OK)
			resp, err := handler(ctx, req)
			note(g.handled, status.Code(err))
			return resp, err
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			note(g.started, codes.OK)
			err := handler(srv, ss)
			note(g.handled, status.Code(err))
			return err
		}),
	)
	greeterv1.RegisterGreeterServiceServer(s, service.NewGreeter(biz.NewGreeter(self), faults, outage))
	done := make(chan struct{})
	go func() { defer close(done); s.Serve(lis) }()
	t.Cleanup(func() { s.Stop(); <-done })
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	g.client = greeterv1.NewGreeterServiceClient(cc)
	// Connected before the test's calls, whose deadlines are for the
	// service, not for dialing.
	cc.Connect()
	for ctx := ctx(t); cc.GetState() != connectivity.Ready; {
		if !cc.WaitForStateChange(ctx, cc.GetState()) {
			t.Fatalf("no connection to the greeter: %v", cc.GetState())
		}
	}
	return g
}

// ctx bounds a test's calls, so that a wait that does not end fails the
// test rather than hanging it.
func ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (g *greeter) sayHello(t *testing.T) (*greeterv1.SayHelloResponse, error) {
	return g.client.SayHello(ctx(t), &greeterv1.SayHelloRequest{Name: "rollcall"})
}

// stream calls StreamHellos and returns the messages received, each with
// the time it took from the call, and the stream's end.
func (g *greeter) stream(ctx context.Context, count uint32) ([]*greeterv1.StreamHellosResponse, []time.Duration, error) {
	start := time.Now()
	s, err := g.client.StreamHellos(ctx, &greeterv1.StreamHellosRequest{Name: "rollcall", Count: count})
	if err != nil {
		return nil, nil, err
	}
	var msgs []*greeterv1.StreamHellosResponse
	var at []time.Duration
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return msgs, at, nil
		}
		if err != nil {
			return msgs, at, err
		}
		msgs = append(msgs, m)
		at = append(at, time.Since(start))
	}
}

const wantMessage = "Hello rollcall from g1 (10.0.0.1:50051)"

func TestSayHelloAnswersInTheInstancesName(t *testing.T) {
	resp, err := serve(t, service.Faults{}, nil).sayHello(t)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetMessage() != wantMessage || resp.GetInstanceId() != "g1" {
		t.Errorf("answer %q from %q, want %q from g1", resp.GetMessage(), resp.GetInstanceId(), wantMessage)
	}
}

func TestFailRateZeroNeverFails(t *testing.T) {
	g := serve(t, service.Faults{FailRate: 0, FailCode: codes.Unavailable}, nil)
	for i := range 200 {
		if _, err := g.sayHello(t); err != nil {
			t.Fatalf("call %d: %v", i+1, err)
		}
	}
}

func TestFailRateOneAlwaysFailsWithTheFailCode(t *testing.T) {
	for _, code := range []codes.Code{codes.Internal, codes.NotFound, codes.Unavailable, codes.ResourceExhausted} {
		t.Run(code.String(), func(t *testing.T) {
			g := serve(t, service.Faults{FailRate: 1, FailCode: code}, nil)
			for i := range 50 {
				_, err := g.sayHello(t)
				if st := status.Convert(err); st.Code() != code || !strings.Contains(st.Message(), "injected failure") {
					t.Fatalf("call %d: %v, want an injected failure with code %v", i+1, err, code)
				}
			}
		})
	}
}

// Latency is a floor: a loaded machine may add to it, never take from it.
func TestLatencyDelaysEveryAnswerAtLeastThatLong(t *testing.T) {
	const latency = 50 * time.Millisecond
	g := serve(t, service.Faults{Latency: latency}, nil)
	start := time.Now()
	if _, err := g.sayHello(t); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < latency {
		t.Errorf("SayHello answered in %v, want at least the latency %v", took, latency)
	}
	msgs, at, err := g.stream(ctx(t), 3)
	if err != nil || len(msgs) != 3 {
		t.Fatalf("StreamHellos: %d messages, %v; want 3", len(msgs), err)
	}
	for i, d := range at {
		if want := time.Duration(i+1) * latency; d < want {
			t.Errorf("greeting %d came after %v, want at least %v (%d latencies)", i, d, want, i+1)
		}
	}
}

// An injected failure comes after the latency, as an application's
// error would.
func TestInjectedFailureComesAfterTheLatency(t *testing.T) {
	const latency = 50 * time.Millisecond
	g := serve(t, service.Faults{Latency: latency, FailRate: 1, FailCode: codes.NotFound}, nil)
	start := time.Now()
	_, err := g.sayHello(t)
	if took := time.Since(start); status.Code(err) != codes.NotFound || took < latency {
		t.Errorf("SayHello failed with %v after %v, want NotFound after at least %v", err, took, latency)
	}
}

// The latency's wait ends with the call: the handler returns the call's
// end as its code instead of sleeping on.
func TestLatencyWaitEndsWhenTheCallEnds(t *testing.T) {
	tests := []struct {
		name string
		end  func(context.Context, *greeter) (context.Context, context.CancelFunc)
		want codes.Code
	}{
		{"deadline", func(ctx context.Context, _ *greeter) (context.Context, context.CancelFunc) {
			return context.WithTimeout(ctx, time.Second)
		}, codes.DeadlineExceeded},
		{"cancel", func(ctx context.Context, g *greeter) (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(ctx)
			go func() {
				select {
				case <-g.started: // the handler is waiting out the latency
					cancel()
				case <-ctx.Done():
				}
			}()
			return ctx, cancel
		}, codes.Canceled},
	}
	for _, tt := range tests {
		for _, method := range []string{"SayHello", "StreamHellos"} {
			t.Run(tt.name+"/"+method, func(t *testing.T) {
				g := serve(t, service.Faults{Latency: time.Hour}, nil)
				callCtx, cancel := tt.end(t.Context(), g)
				defer cancel()
				var err error
				if method == "SayHello" {
					_, err = g.client.SayHello(callCtx, &greeterv1.SayHelloRequest{Name: "rollcall"})
				} else {
					_, _, err = g.stream(callCtx, 1)
				}
				if status.Code(err) != tt.want {
					t.Errorf("client got %v, want %v", err, tt.want)
				}
				// The server learns of the end from its own deadline or from
				// the client's cancellation, whichever comes first.
				select {
				case code := <-g.handled:
					if code != codes.DeadlineExceeded && code != codes.Canceled {
						t.Errorf("handler returned %v, want the call's end (DeadlineExceeded or Canceled)", code)
					}
				case <-time.After(30 * time.Second):
					t.Fatalf("handler still waiting 30s after the call ended, on a latency of 1h")
				}
			})
		}
	}
}

func TestStreamHellosSendsCountGreetingsInOrderUpToTheCap(t *testing.T) {
	g := serve(t, service.Faults{}, nil)
	for _, count := range []uint32{0, 1, 5, service.MaxStreamCount} {
		msgs, _, err := g.stream(ctx(t), count)
		if err != nil || len(msgs) != int(count) {
			t.Errorf("count %d: %d greetings, %v; want %d", count, len(msgs), err, count)
			continue
		}
		for i, m := range msgs {
			if m.GetIndex() != uint32(i) || m.GetMessage() != wantMessage || m.GetInstanceId() != "g1" {
				t.Errorf("count %d: greeting %d is %v, want index %d, %q from g1", count, i, m, i, wantMessage)
				break
			}
		}
	}
	msgs, _, err := g.stream(ctx(t), service.MaxStreamCount+1)
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "101 is over 100") || len(msgs) > 0 {
		t.Errorf("count %d: %d greetings, %v; want none, InvalidArgument naming the count and cap", service.MaxStreamCount+1, len(msgs), err)
	}
}

// The outage drill fails every SayHello at once with UNAVAILABLE, before
// any latency, and ends when switched off.
func TestOutageFailsEverySayHelloWithUnavailableWhileOn(t *testing.T) {
	outage := new(service.Outage)
	g := serve(t, service.Faults{Latency: time.Hour}, outage)
	outage.Set(true)
	for i := range 10 {
		if _, err := g.sayHello(t); status.Code(err) != codes.Unavailable {
			t.Fatalf("outage on, call %d: %v, want Unavailable at once (not after the 1h latency)", i+1, err)
		}
	}

	outage.Set(false)
	g = serve(t, service.Faults{}, outage)
	if _, err := g.sayHello(t); err != nil {
		t.Errorf("outage off: %v, want an answer", err)
	}
}
