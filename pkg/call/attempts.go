package call

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/rollcall/rollcall/pkg/balance"
	"github.com/rollcall/rollcall/pkg/discovery/resolve"
	"github.com/rollcall/rollcall/pkg/liveness"
)

// MaxAttempts is the most attempts one call of an idempotent method makes,
// whatever sends them: a retry after UNAVAILABLE, a hedge, or a retry of
// an attempt cut because its instance stalled. Every attempt after the
// first also needs a token of the connection's retry budget. Calls of
// other methods make one attempt (gRPC's transparent retry of a request
// that never reached a server aside).
const MaxAttempts = 3

// Hedging defaults: an idempotent call still unanswered at the
// HedgeQuantile of its method's recent latencies (at least MinHedgeDelay)
// sends one more attempt to another instance. At the 99th percentile
// hedges are about 1 % of calls.
const (
	HedgeQuantile = 0.99
	MinHedgeDelay = 10 * time.Millisecond
)

// Attempt kinds, as metrics name them.
const (
	KindRetry = "retry" // after UNAVAILABLE
	KindHedge = "hedge" // no answer after the hedge delay
	KindStall = "stall" // the instance stopped sending heartbeats
)

var (
	errLost    = errors.New("call: another attempt answered first")
	errStalled = errors.New("call: the instance stopped sending heartbeats")
)

// method is an idempotent method's hedging settings and latencies.
type method struct {
	name  string
	hedge bool
	fixed time.Duration // a fixed hedge delay; 0: adaptive
	lat   latencies
	// reply is the method's response type, learnt from the first call,
	// for the answers of attempts after a call's first.
	reply atomic.Pointer[protoreflect.MessageType]
}

// hedgeDelay is how long a call of m waits before hedging, and how long
// an attempt typically takes; ok is false when m is not hedged now.
func (m *method) hedgeDelay(now time.Duration) (delay, typical time.Duration, ok bool) {
	if !m.hedge {
		return 0, 0, false
	}
	atQ, median := m.lat.estimates(HedgeQuantile, now)
	if m.fixed > 0 {
		return m.fixed, median, true
	}
	if atQ == 0 {
		return 0, 0, false
	}
	return max(atQ, MinHedgeDelay), median, true
}

// caller runs the calls of one connection.
type caller struct {
	service string
	timeout time.Duration
	methods map[string]*method // the idempotent methods
	budget  *budget
	rb      *resolve.Builder
	obs     Observer
	// fleet is the balancer's count of ready instances, learnt from the
	// first pick of a rollcall policy; nil before, or with another policy.
	fleet atomic.Pointer[balance.Fleet]
	pool  sync.Pool // *idempotentCall
}

func newCaller(service string, o *options, rb *resolve.Builder) *caller {
	c := &caller{service: service, timeout: o.timeout, methods: map[string]*method{},
		budget: newBudget(o.budgetRatio, o.budgetPerSecond), rb: rb, obs: o.observer}
	for name := range idempotentMethods() {
		m := &method{name: name, hedge: o.hedging}
		if d, ok := o.hedgeDelays[name]; ok {
			m.hedge, m.fixed = d > 0, d
		}
		c.methods[name] = m
	}
	c.obs.Dialed(service, c.budget)
	return c
}

// unary gives a call without a deadline the default one, runs calls of
// idempotent methods in attempts, and names the service when no instance
// of it is registered.
func (c *caller) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	start := liveness.Now()
	c.budget.deposit(start)
	if _, ok := ctx.Deadline(); !ok && c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	m := c.methods[method]
	msg, ok := reply.(proto.Message)
	if m == nil || !ok {
		return c.rb.Explain(cc, invoker(ctx, method, req, reply, cc, opts...))
	}
	if m.reply.Load() == nil {
		t := msg.ProtoReflect().Type()
		m.reply.Store(&t)
	}
	if f := c.fleet.Load(); f != nil && f.Ready() == 1 {
		// One instance: nothing to hedge to, no other to cut over to; the
		// call goes as on a plain connection, and only a failure takes the
		// way of extra attempts. Its latency is not recorded either (a
		// clock read saved): the hedge delay is learnt again, in the
		// method's first calls, once there is an instance to hedge to.
		err := invoker(ctx, method, req, reply, cc, opts...)
		if status.Code(err) != codes.Unavailable {
			return c.rb.Explain(cc, err)
		}
		k := c.get(ctx, m, method, req, msg, cc, invoker, opts)
		k.begin()
		err = k.afterFirst(err)
		c.put(k)
		return c.rb.Explain(cc, err)
	}
	k := c.get(ctx, m, method, req, msg, cc, invoker, opts)
	err := k.run(start)
	c.put(k)
	return c.rb.Explain(cc, err)
}

func (c *caller) get(ctx context.Context, m *method, method string, req any, reply proto.Message, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts []grpc.CallOption) *idempotentCall {
	k, _ := c.pool.Get().(*idempotentCall)
	if k == nil {
		k = newIdempotentCall(c)
	}
	k.ctx, k.m, k.method, k.req, k.reply, k.cc, k.invoker, k.opts = ctx, m, method, req, reply, cc, invoker, opts
	return k
}

// put returns k to the pool unless something of its call may still run.
func (c *caller) put(k *idempotentCall) {
	if k.reusable() {
		k.ctx, k.req, k.reply, k.cc, k.invoker, k.opts = nil, nil, nil, nil, nil, nil
		c.pool.Put(k)
	}
}

// idempotentCall is one call of an idempotent method: its first attempt
// runs on the caller's goroutine, any other on a goroutine of its own.
type idempotentCall struct {
	c       *caller
	m       *method
	ctx     context.Context
	method  string
	req     any
	reply   proto.Message
	cc      *grpc.ClientConn
	invoker grpc.UnaryInvoker
	opts    []grpc.CallOption

	onStall func(*balance.Attempt) bool // k.stalled, bound once
	timer   *time.Timer                 // the hedge, bound to k.hedge once
	final   chan int                    // the answering attempt

	mu       sync.Mutex
	started  int
	running  int
	answered bool
	err      error
	timerSet bool
	async    bool // an attempt ran on a goroutine of its own
	slots    [MaxAttempts]slot
}

type slot struct {
	att     balance.Attempt
	cancel  context.CancelCauseFunc // nil when the attempt cannot be cut
	running bool
	stalled bool
	reply   proto.Message // where an attempt after the first answers
	header  metadata.MD
	trailer metadata.MD
	peer    peer.Peer
}

func newIdempotentCall(c *caller) *idempotentCall {
	k := &idempotentCall{c: c, final: make(chan int, 1)}
	k.onStall = k.stalled
	k.timer = time.AfterFunc(time.Hour, k.hedge)
	k.timer.Stop()
	return k
}

// reusable: nothing of the call can still run (no attempt goroutine, no
// hedge timer callback), so k may serve another call.
func (k *idempotentCall) reusable() bool {
	return !k.async && !k.timerSet
}

// begin readies k for a call whose first attempt is starting.
func (k *idempotentCall) begin() {
	k.started, k.running, k.answered, k.err, k.timerSet, k.async = 1, 1, false, nil, false, false
	first := &k.slots[0]
	first.att.Reset()
	first.att.OnStall = nil
	first.running, first.stalled, first.cancel = true, false, nil
}

// run runs the call, which began at start (liveness.Now).
func (k *idempotentCall) run(start time.Duration) error {
	k.begin()
	first := &k.slots[0]
	ctx := k.ctx
	if f := k.c.fleet.Load(); f == nil || f.Ready() != 0 {
		// Only an attempt with another instance to go to is worth cutting
		// or hedging; a cancellable context costs each call allocations.
		ctx, first.cancel = context.WithCancelCause(ctx)
		first.att.OnStall = k.onStall
		if delay, typical, ok := k.m.hedgeDelay(start); ok && k.timeLeft(start) > delay+typical {
			k.timerSet = true
			k.timer.Reset(delay)
		}
	}
	err := k.invoker(balance.WithAttempt(ctx, &first.att), k.method, k.req, k.reply, k.cc, k.opts...)
	now := first.att.End(err)
	if first.cancel != nil {
		first.cancel(nil)
	}
	if f := first.att.Fleet(); f != nil && f != k.c.fleet.Load() {
		k.c.fleet.Store(f) // the first pick, or the balancer was rebuilt (idle mode)
	}
	if code := status.Code(err); code != codes.Canceled && code != codes.Unavailable || context.Cause(ctx) == errLost {
		k.m.lat.record(now-start, now)
	}
	return k.afterFirst(err)
}

// afterFirst takes the first attempt's end (err) and returns the call's:
// its own, or that of the attempt that answered.
func (k *idempotentCall) afterFirst(err error) error {
	if k.finished(0, err) {
		return k.err // err, or what finished made of it
	}
	i := <-k.final
	s := &k.slots[i]
	proto.Reset(k.reply)
	proto.Merge(k.reply, s.reply)
	k.copyOutputs(s)
	return k.err
}

// timeLeft is the time until the caller's deadline.
func (k *idempotentCall) timeLeft(now time.Duration) time.Duration {
	d, ok := k.ctx.Deadline()
	if !ok {
		return time.Duration(1<<63 - 1)
	}
	return liveness.At(d) - now
}

// finished takes the end of attempt i, and reports whether it is the
// call's answer and the caller's own (the first attempt's) result; when
// another attempt answers, k.final receives its index.
func (k *idempotentCall) finished(i int, err error) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	s := &k.slots[i]
	s.running = false
	k.running--
	if k.answered {
		return false
	}
	if !s.stalled && status.Code(err) != codes.Unavailable {
		k.answer(i, err) // an answer, or the caller's deadline or cancel
		return i == 0
	}
	if k.running > 0 {
		return false // another attempt is still out: its answer decides
	}
	if k.ctx.Err() == nil && k.extra(KindRetry) {
		return false
	}
	if s.stalled && k.ctx.Err() == nil {
		// The call cut it, not the caller: say what a caller retries.
		err = status.Error(codes.Unavailable, errStalled.Error())
	}
	k.answer(i, err)
	return i == 0
}

// answer makes attempt i the call's answer and cuts the others.
func (k *idempotentCall) answer(i int, err error) {
	k.answered, k.err = true, err
	if k.timerSet && k.timer.Stop() {
		k.timerSet = false // stopped before it fired: nothing of it runs
	}
	for j := range k.started {
		if s := &k.slots[j]; j != i && s.running && s.cancel != nil {
			s.att.Lost()
			s.cancel(errLost)
		}
	}
	if i != 0 {
		k.final <- i
	}
}

// extra starts another attempt if the call has attempts left and the
// budget a token, avoiding the instances tried so far. k.mu is held.
func (k *idempotentCall) extra(kind string) bool {
	if k.started >= MaxAttempts {
		return false
	}
	if !k.c.budget.withdraw() {
		k.c.obs.Denied(k.c.service, kind)
		return false
	}
	k.c.obs.ExtraAttempt(k.c.service, kind)
	i := k.started
	k.started++
	k.running++
	k.async = true
	s := &k.slots[i]
	s.att.Reset()
	for j := range i {
		s.att.Avoid(&k.slots[j].att)
	}
	s.att.OnStall = k.onStall
	s.running, s.stalled = true, false
	s.reply = (*k.m.reply.Load()).New().Interface() // k.reply may be being written
	s.header, s.trailer, s.peer = nil, nil, peer.Peer{}
	var ctx context.Context
	ctx, s.cancel = context.WithCancelCause(k.ctx)
	opts := k.ownOutputs(s)
	// The caller may reuse its request once the call returns, while this
	// attempt, cut, may still be sending it.
	req := k.req
	if m, ok := req.(proto.Message); ok {
		req = proto.Clone(m)
	}
	go func() {
		err := k.invoker(balance.WithAttempt(ctx, &s.att), k.method, req, s.reply, k.cc, opts...)
		s.att.End(err)
		s.cancel(nil)
		k.finished(i, err)
	}()
	return true
}

// hedge runs when the first attempt has had no answer for the hedge
// delay: one more attempt goes to another instance if it can still
// answer in time.
func (k *idempotentCall) hedge() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.answered || k.running == 0 {
		return
	}
	now := liveness.Now()
	if _, typical, _ := k.m.hedgeDelay(now); k.timeLeft(now) <= typical {
		return
	}
	k.extra(KindHedge)
}

// stalled is told by the balancer that attempt a's instance stopped
// sending heartbeats. It cuts the attempt when another attempt is out, or
// when it can send one elsewhere now; otherwise the attempt waits, as it
// would on a plain connection.
func (k *idempotentCall) stalled(a *balance.Attempt) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	i := -1
	for j := range k.started {
		if &k.slots[j].att == a {
			i = j
		}
	}
	if i < 0 || k.answered || !k.slots[i].running || k.slots[i].stalled || k.slots[i].cancel == nil {
		return false
	}
	// Attempts already cut for a stall will not answer.
	out := 0
	for j := range k.started {
		if s := &k.slots[j]; s.running && !s.stalled {
			out++
		}
	}
	if out < 2 && (k.ctx.Err() != nil || !k.extra(KindStall)) {
		return false
	}
	k.slots[i].stalled = true
	k.slots[i].cancel(errStalled)
	return true
}

// ownOutputs returns the call options for an attempt on its own
// goroutine, with the header, trailer and peer it reports written to the
// attempt's slot instead of the caller's variables.
func (k *idempotentCall) ownOutputs(s *slot) []grpc.CallOption {
	opts := make([]grpc.CallOption, 0, len(k.opts))
	for _, o := range k.opts {
		switch o.(type) {
		case grpc.HeaderCallOption:
			o = grpc.Header(&s.header)
		case grpc.TrailerCallOption:
			o = grpc.Trailer(&s.trailer)
		case grpc.PeerCallOption:
			o = grpc.Peer(&s.peer)
		}
		opts = append(opts, o)
	}
	return opts
}

// copyOutputs copies the answering attempt's header, trailer and peer to
// the caller's variables.
func (k *idempotentCall) copyOutputs(s *slot) {
	for _, o := range k.opts {
		switch o := o.(type) {
		case grpc.HeaderCallOption:
			*o.HeaderAddr = s.header
		case grpc.TrailerCallOption:
			*o.TrailerAddr = s.trailer
		case grpc.PeerCallOption:
			*o.PeerAddr = s.peer
		}
	}
}
