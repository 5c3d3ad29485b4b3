package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	etcdnaming "go.etcd.io/etcd/client/v3/naming/resolver"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/stats"

	"github.com/rollcall/rollcall/pkg/balance"
	"github.com/rollcall/rollcall/pkg/call"
	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/discovery/resolve"
)

// stack is one way to build discovery: rollcall's defaults, or a baseline
// made only of etcd's client/v3/naming packages.
type stack struct {
	name string
	bin  string
	// prefix is where the stack's instances of service live in etcd.
	prefix func(service string) string
	args   func(etcd []string, id string) []string
	// dial connects to service; zone, when set, is the client's zone (a
	// stack without zone-aware routing ignores it).
	dial func(cli *clientv3.Client, service string, obs *observer, zone string) (*grpc.ClientConn, error)
	// dialEnv, set instead of dial, starts what the client needs besides
	// etcd and the greeters (a control plane, a proxy) and dials through
	// it; such a client's lists cannot be observed.
	dialEnv func(e *env) (*grpc.ClientConn, error)
	xdsBin  string // the control plane's binary, for dialEnv
}

// rollcallStack dials with call.Dial's defaults, or with another balancing
// policy when policy is set (the stack is then named rollcall/<policy>).
func rollcallStack(bin, policy string) stack {
	name := "rollcall"
	var opts []call.Option
	if policy != "" {
		name += "/" + policy
		opts = append(opts, call.WithPolicy(policy))
	}
	return stack{
		name:   name,
		bin:    bin,
		prefix: func(service string) string { return "rollcall/" + service + "/" },
		args: func(etcd []string, id string) []string {
			return []string{"-listen", freeAddr(), "-id", id, "-etcd-endpoints", strings.Join(etcd, ","), "-log-format", "json", "-log-level", "warn",
				"-metrics-listen", freeAddr()}
		},
		dial: func(cli *clientv3.Client, service string, obs *observer, zone string) (*grpc.ClientConn, error) {
			// rollcall's list is observed as it is published, a goroutine
			// hop before gRPC receives it.
			rb, err := resolve.NewBuilder(cli, resolve.WithObserver(resolve.UpdateFunc(func(_ string, list []discovery.Instance) {
				obs.recordCount(len(list))
			})))
			if err != nil {
				return nil, err
			}
			all := append(opts[:len(opts):len(opts)], call.WithObserver(obs), call.WithBalanceObserver(obs))
			if zone != "" {
				all = append(all, call.WithZone(zone))
			}
			if obs.countAttempts {
				all = append(all, call.WithDialOptions(grpc.WithStatsHandler(obs)))
			}
			return call.Dial(rb, service, all...)
		},
	}
}

func baselineStack(bin string) stack {
	return stack{
		name:   "baseline",
		bin:    bin,
		prefix: func(service string) string { return "baseline/" + service + "/" },
		args: func(etcd []string, id string) []string {
			return []string{"-listen", freeAddr(), "-id", id, "-etcd-endpoints", etcd[0], "-target", "baseline/greeter", "-metrics-listen", freeAddr()}
		},
		dial: func(cli *clientv3.Client, service string, obs *observer, _ string) (*grpc.ClientConn, error) {
			b, err := etcdnaming.NewBuilder(cli)
			if err != nil {
				return nil, err
			}
			opts := []grpc.DialOption{grpc.WithResolvers(obs.wrap(b)),
				grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`)}
			if obs.countAttempts {
				opts = append(opts, grpc.WithStatsHandler(obs))
			}
			return grpc.NewClient("etcd:///baseline/"+service, opts...)
		},
	}
}

// observer records the address lists that the resolver hands to gRPC,
// whichever resolver it is (it wraps the real ClientConn, it fakes
// nothing), and, as a stats handler, every attempt a client sends, so
// that retries and hedges from any layer are counted.
type observer struct {
	balance.Fleets // rollcall's balancers, to read what they do (none for the baseline)

	mu      sync.Mutex
	count   int
	at      time.Time
	changed chan struct{}
	// countAttempts: dial with the observer as a stats handler, which
	// costs every call; only the scenarios that count attempts need it.
	countAttempts bool
	// sent counts attempts whose headers went to a server.
	sent atomic.Int64
	// watched, when set, is an address whose attempts triesTo returns.
	watched atomic.Pointer[string]
	tries   []time.Time
	extra   map[string]int
}

func newObserver() *observer { return &observer{count: -1, changed: make(chan struct{})} }

// watchTries records, from now on, the time of each attempt sent to addr.
func (o *observer) watchTries(addr string) { o.watched.Store(&addr) }

func (o *observer) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (o *observer) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (o *observer) HandleConn(context.Context, stats.ConnStats) {}

// HandleRPC counts each attempt's outgoing header: one per attempt that
// reached a connection.
func (o *observer) HandleRPC(_ context.Context, s stats.RPCStats) {
	h, ok := s.(*stats.OutHeader)
	if !ok || !h.Client {
		return
	}
	o.sent.Add(1)
	if w := o.watched.Load(); w != nil && h.RemoteAddr != nil && h.RemoteAddr.String() == *w {
		o.mu.Lock()
		o.tries = append(o.tries, time.Now())
		o.mu.Unlock()
	}
}

// Dialed, ExtraAttempt and Denied make the observer a call.Observer:
// rollcall's client reports its extra attempts by kind.
func (o *observer) Dialed(string, call.Budget) {}

func (o *observer) ExtraAttempt(_, kind string) {
	o.mu.Lock()
	if o.extra == nil {
		o.extra = map[string]int{}
	}
	o.extra[kind]++
	o.mu.Unlock()
}

func (o *observer) Denied(string, string) {}

// extraAttempts returns the extra attempts so far, by kind.
func (o *observer) extraAttempts() map[string]int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return maps.Clone(o.extra)
}

// triesTo returns the start times of the attempts sent to the watched
// address.
func (o *observer) triesTo() []time.Time {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.tries)
}

func (o *observer) wrap(b resolver.Builder) resolver.Builder { return &observedBuilder{b, o} }

func (o *observer) record(s resolver.State) {
	n := len(s.Endpoints)
	if n == 0 {
		n = len(s.Addresses)
	}
	o.recordCount(n)
}

func (o *observer) recordCount(n int) {
	o.mu.Lock()
	o.count, o.at = n, time.Now()
	close(o.changed)
	o.changed = make(chan struct{})
	o.mu.Unlock()
}

// awaitCount waits until the resolver handed gRPC a list of n, returning
// when it did.
func (o *observer) awaitCount(n int, timeout time.Duration) (time.Time, error) {
	deadline := time.After(timeout)
	for {
		o.mu.Lock()
		count, at, changed := o.count, o.at, o.changed
		o.mu.Unlock()
		if count == n {
			return at, nil
		}
		select {
		case <-changed:
		case <-deadline:
			return time.Time{}, fmt.Errorf("resolver list has %d entries, never %d", count, n)
		}
	}
}

type observedBuilder struct {
	resolver.Builder
	obs *observer
}

func (b *observedBuilder) Build(t resolver.Target, cc resolver.ClientConn, opts resolver.BuildOptions) (resolver.Resolver, error) {
	return b.Builder.Build(t, &observedCC{cc, b.obs}, opts)
}

type observedCC struct {
	resolver.ClientConn
	obs *observer
}

func (c *observedCC) UpdateState(s resolver.State) error {
	c.obs.record(s)
	return c.ClientConn.UpdateState(s)
}
