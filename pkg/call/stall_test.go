package call

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/rollcall/rollcall/pkg/liveness"
)

// An attempt is cut for a stall only while another attempt that can
// answer is out: one already cut for a stall does not count. Here the
// budget pays for one extra attempt; when the instance of that one stalls
// too, it is left to answer rather than cut with nothing to replace it.
func TestStallCutsNoAttemptWithoutAnotherToAnswer(t *testing.T) {
	c := &caller{service: "s", methods: map[string]*method{}, budget: newBudget(0, 0.1), obs: noObserver{}}
	m := &method{name: "/s/M"}
	var gates [MaxAttempts]chan struct{}
	for i := range gates {
		gates[i] = make(chan struct{})
	}
	var n atomic.Int32
	invoker := func(ctx context.Context, _ string, _, _ any, _ *grpc.ClientConn, _ ...grpc.CallOption) error {
		i := n.Add(1) - 1
		select {
		case <-ctx.Done():
			<-gates[i]
			return status.FromContextError(ctx.Err()).Err()
		case <-gates[i]:
			return nil
		}
	}
	reply := &emptypb.Empty{}
	t.Cleanup(func() {
		for _, g := range gates {
			select {
			case <-g:
			default:
				close(g)
			}
		}
	})
	k := c.get(context.Background(), m, m.name, &emptypb.Empty{}, reply, nil, invoker, nil)
	typ := reply.ProtoReflect().Type()
	m.reply.Store(&typ)
	done := make(chan error, 1)
	started := make(chan struct{})
	go func() {
		close(started)
		done <- k.run(liveness.Now())
	}()
	<-started
	for n.Load() < 1 {
		runtime.Gosched() // the first attempt is being sent
	}
	if !k.stalled(&k.slots[0].att) {
		t.Fatal("the first attempt was not cut: the budget had a token for another")
	}
	for n.Load() < 2 {
		runtime.Gosched() // the stall's attempt is being sent
	}
	if k.stalled(&k.slots[1].att) {
		t.Fatal("the stall's attempt was cut with no token for another and only a cut attempt out")
	}
	close(gates[0]) // the cut attempt ends
	close(gates[1]) // the other answers
	if err := <-done; err != nil {
		t.Errorf("call = %v, want the answer of the attempt left to run", err)
	}
}

// When the last attempt to end is one the call cut for a stall, and the
// budget has no token for a retry, the call fails UNAVAILABLE, as the
// instances did: not CANCELED, which says the caller gave up and which
// callers do not retry.
func TestStallCutAttemptEndsTheCallUnavailable(t *testing.T) {
	c := &caller{service: "s", methods: map[string]*method{}, budget: newBudget(0, 0.1), obs: noObserver{}}
	m := &method{name: "/s/M"}
	var gates [MaxAttempts]chan struct{}
	for i := range gates {
		gates[i] = make(chan struct{})
	}
	var n atomic.Int32
	invoker := func(ctx context.Context, _ string, _, _ any, _ *grpc.ClientConn, _ ...grpc.CallOption) error {
		i := n.Add(1) - 1
		select {
		case <-ctx.Done():
			<-gates[i]
			return status.FromContextError(ctx.Err()).Err()
		case <-gates[i]:
			return status.Error(codes.Unavailable, "connection reset by peer")
		}
	}
	t.Cleanup(func() {
		for _, g := range gates {
			select {
			case <-g:
			default:
				close(g)
			}
		}
	})
	reply := &emptypb.Empty{}
	k := c.get(context.Background(), m, m.name, &emptypb.Empty{}, reply, nil, invoker, nil)
	typ := reply.ProtoReflect().Type()
	m.reply.Store(&typ)
	done := make(chan error, 1)
	go func() { done <- k.run(liveness.Now()) }()
	for n.Load() < 1 {
		runtime.Gosched() // the first attempt is being sent
	}
	if !k.stalled(&k.slots[0].att) {
		t.Fatal("the first attempt was not cut: the budget had a token for another")
	}
	for n.Load() < 2 {
		runtime.Gosched() // the stall's attempt is being sent
	}
	close(gates[1]) // the stall's attempt fails UNAVAILABLE while the cut one is still out
	for running := 2; running > 1; {
		runtime.Gosched()
		k.mu.Lock()
		running = k.running
		k.mu.Unlock()
	}
	close(gates[0]) // the cut attempt ends last; no token is left for a retry
	if err := <-done; status.Code(err) != codes.Unavailable {
		t.Errorf("call = %v, want UNAVAILABLE", err)
	}
}
