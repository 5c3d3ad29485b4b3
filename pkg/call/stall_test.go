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

// gatedCall is an idempotent call whose attempt i ends when gates[i]
// closes: with its context's error once cut, else with answer. Its retry
// budget pays for one extra attempt.
type gatedCall struct {
	k     *idempotentCall
	gates [MaxAttempts]chan struct{}
	sent  atomic.Int32 // attempts sent so far
	done  chan error   // the call's result
}

func startGatedCall(t *testing.T, answer error) *gatedCall {
	t.Helper()
	g := &gatedCall{done: make(chan error, 1)}
	for i := range g.gates {
		g.gates[i] = make(chan struct{})
	}
	t.Cleanup(func() {
		for _, gate := range g.gates {
			select {
			case <-gate:
			default:
				close(gate)
			}
		}
	})
	invoker := func(ctx context.Context, _ string, _, _ any, _ *grpc.ClientConn, _ ...grpc.CallOption) error {
		i := g.sent.Add(1) - 1
		select {
		case <-ctx.Done():
			<-g.gates[i]
			return status.FromContextError(ctx.Err()).Err()
		case <-g.gates[i]:
			return answer
		}
	}
	c := &caller{service: "s", methods: map[string]*method{}, budget: newBudget(0, 0.1), obs: noObserver{}}
	m := &method{name: "/s/M"}
	reply := &emptypb.Empty{}
	g.k = c.get(context.Background(), m, m.name, &emptypb.Empty{}, reply, nil, invoker, nil)
	typ := reply.ProtoReflect().Type()
	m.reply.Store(&typ)
	go func() { g.done <- g.k.run(liveness.Now()) }()
	g.waitSent(1)
	return g
}

// waitSent returns once n attempts have been sent.
func (g *gatedCall) waitSent(n int32) {
	for g.sent.Load() < n {
		runtime.Gosched()
	}
}

// An attempt is cut for a stall only while another attempt that can
// answer is out: one already cut for a stall does not count. Here the
// budget pays for one extra attempt; when the instance of that one stalls
// too, it is left to answer rather than cut with nothing to replace it.
func TestStallCutsNoAttemptWithoutAnotherToAnswer(t *testing.T) {
	g := startGatedCall(t, nil)
	if !g.k.stalled(&g.k.slots[0].att) {
		t.Fatal("the first attempt was not cut: the budget had a token for another")
	}
	g.waitSent(2) // the stall's attempt
	if g.k.stalled(&g.k.slots[1].att) {
		t.Fatal("the stall's attempt was cut with no token for another and only a cut attempt out")
	}
	close(g.gates[0]) // the cut attempt ends
	close(g.gates[1]) // the other answers
	if err := <-g.done; err != nil {
		t.Errorf("call = %v, want the answer of the attempt left to run", err)
	}
}

// When the last attempt to end is one the call cut for a stall, and the
// budget has no token for a retry, the call fails UNAVAILABLE, as the
// instances did: not CANCELED, which says the caller gave up and which
// callers do not retry.
func TestStallCutAttemptEndsTheCallUnavailable(t *testing.T) {
	g := startGatedCall(t, status.Error(codes.Unavailable, "connection reset by peer"))
	if !g.k.stalled(&g.k.slots[0].att) {
		t.Fatal("the first attempt was not cut: the budget had a token for another")
	}
	g.waitSent(2)
	close(g.gates[1]) // the stall's attempt fails UNAVAILABLE while the cut one is still out
	for running := 2; running > 1; {
		runtime.Gosched()
		g.k.mu.Lock()
		running = g.k.running
		g.k.mu.Unlock()
	}
	close(g.gates[0]) // the cut attempt ends last; no token is left for a retry
	if err := <-g.done; status.Code(err) != codes.Unavailable {
		t.Errorf("call = %v, want UNAVAILABLE", err)
	}
}
