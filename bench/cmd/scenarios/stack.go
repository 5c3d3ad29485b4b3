package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	etcdnaming "go.etcd.io/etcd/client/v3/naming/resolver"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/resolver"

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
	dial   func(cli *clientv3.Client, service string, obs *observer) (*grpc.ClientConn, error)
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
			return []string{"-listen", "127.0.0.1:0", "-id", id, "-etcd-endpoints", strings.Join(etcd, ","), "-log-format", "json", "-log-level", "warn"}
		},
		dial: func(cli *clientv3.Client, service string, obs *observer) (*grpc.ClientConn, error) {
			// rollcall's list is observed as it is published, a goroutine
			// hop before gRPC receives it.
			rb, err := resolve.NewBuilder(cli, resolve.WithOnUpdate(func(_ string, list []discovery.Instance) {
				obs.recordCount(len(list))
			}))
			if err != nil {
				return nil, err
			}
			if obs.interceptAttempts {
				opts = append(opts[:len(opts):len(opts)], call.WithDialOptions(grpc.WithChainUnaryInterceptor(obs.attempts)))
			}
			return call.Dial(rb, service, opts...)
		},
	}
}

func baselineStack(bin string) stack {
	return stack{
		name:   "baseline",
		bin:    bin,
		prefix: func(service string) string { return "baseline/" + service + "/" },
		args: func(etcd []string, id string) []string {
			return []string{"-id", id, "-etcd-endpoints", etcd[0], "-target", "baseline/greeter"}
		},
		dial: func(cli *clientv3.Client, service string, obs *observer) (*grpc.ClientConn, error) {
			b, err := etcdnaming.NewBuilder(cli)
			if err != nil {
				return nil, err
			}
			return grpc.NewClient("etcd:///baseline/"+service,
				grpc.WithResolvers(obs.wrap(b)),
				grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`))
		},
	}
}

// observer records the address lists that the resolver hands to gRPC,
// whichever resolver it is: it wraps the real ClientConn, it fakes nothing.
type observer struct {
	mu      sync.Mutex
	count   int
	at      time.Time
	changed chan struct{}
	// interceptAttempts: dial with the attempts interceptor, which costs
	// each call a link in the interceptor chain; only the hang scenario
	// needs it.
	interceptAttempts bool
	// watched, when set, is an address whose attempts tries records
	// (rollcall's calls may try again on another instance). Off, the
	// interceptor costs a call next to nothing, so that the throughput
	// scenario measures rollcall, not the harness.
	watched atomic.Pointer[string]
	tries   []time.Time
}

func newObserver() *observer { return &observer{count: -1, changed: make(chan struct{})} }

// watchTries makes attempts record, from now on, each attempt sent to addr.
func (o *observer) watchTries(addr string) { o.watched.Store(&addr) }

// attempts is the innermost interceptor: it sees each attempt and records
// those the balancer sent to the watched address.
func (o *observer) attempts(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	watched := o.watched.Load()
	if watched == nil {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	var p peer.Peer
	start := time.Now()
	err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Peer(&p))...)
	if p.Addr != nil && p.Addr.String() == *watched {
		o.mu.Lock()
		o.tries = append(o.tries, start)
		o.mu.Unlock()
	}
	return err
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
