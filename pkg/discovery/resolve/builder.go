// Package resolve is a gRPC resolver that finds a service's instances in
// etcd and keeps the list current by watching it. Unlike etcd's own
// naming/resolver it never blocks Build on etcd, re-lists and re-watches
// after every watch failure, keeps the last good list while etcd is away,
// and hands each instance's metadata to the balancer.
package resolve

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"strings"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/status"

	"github.com/rollcall/rollcall/pkg/discovery"
)

// DefaultScheme is the target scheme unless WithScheme says otherwise:
// targets read etcd:///<service>.
const DefaultScheme = "etcd"

// Option changes a Builder's defaults.
type Option func(*Builder)

// WithScheme sets the target scheme (default DefaultScheme).
func WithScheme(s string) Option { return func(b *Builder) { b.scheme = s } }

// WithNamespace sets the key namespace to read (default discovery.DefaultNamespace).
func WithNamespace(ns string) Option { return func(b *Builder) { b.namespace = ns } }

// WithLogger sets where skipped values and watch restarts are logged.
func WithLogger(l *slog.Logger) Option { return func(b *Builder) { b.log = l } }

// Builder builds resolvers for targets <scheme>:///<service>. Pass it to
// grpc.NewClient with grpc.WithResolvers; no global registration is needed.
// Resolvers of the same service share one etcd watch.
type Builder struct {
	client    *clientv3.Client
	scheme    string
	namespace string
	log       *slog.Logger
	observers observers  // told in turn, from each watch's goroutine
	snapshots *snapshots // nil unless WithSnapshots

	mu        sync.Mutex
	watches   map[string]*serviceWatch
	lastKnown map[string]snapshot // lists of services no resolver watches now
}

var _ resolver.Builder = (*Builder)(nil)

var schemeRE = regexp.MustCompile(`^[a-z][a-z0-9+.-]*$`)

// NewBuilder returns a Builder reading etcd through client, which the
// caller keeps and closes after every ClientConn that uses the Builder.
func NewBuilder(client *clientv3.Client, opts ...Option) (*Builder, error) {
	b := &Builder{
		client:    client,
		scheme:    DefaultScheme,
		namespace: discovery.DefaultNamespace,
		log:       slog.Default(),
		watches:   map[string]*serviceWatch{},
		lastKnown: map[string]snapshot{},
	}
	for _, opt := range opts {
		opt(b)
	}
	if client == nil {
		return nil, fmt.Errorf("resolve: nil etcd client")
	}
	// A scheme gRPC cannot parse (the seed's "etcdv3_resolver") makes it
	// fall back to DNS without a word; refuse it here instead.
	if !schemeRE.MatchString(b.scheme) {
		return nil, fmt.Errorf("invalid resolver scheme %q: want a lower-case letter, then letters, digits, '+', '-' or '.'", b.scheme)
	}
	if err := discovery.ValidateNamespace(b.namespace); err != nil {
		return nil, err
	}
	return b, nil
}

// Scheme returns the scheme of the targets this Builder resolves.
func (b *Builder) Scheme() string { return b.scheme }

// Target returns the dial target of service, e.g. "etcd:///greeter".
func (b *Builder) Target(service string) string { return b.scheme + ":///" + service }

// Build starts resolving target's service. It never waits for etcd: a
// service that another resolver already watches starts from its list at
// once; otherwise the list follows when etcd answers.
func (b *Builder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	service := strings.TrimPrefix(target.URL.Path, "/")
	if err := discovery.ValidateService(service); err != nil {
		return nil, fmt.Errorf("target %q: %w", target.URL.String(), err)
	}
	w := b.acquire(service)
	r := newResolver(cc, w, func() { b.release(w) })
	return r, nil
}

func (b *Builder) acquire(service string) *serviceWatch {
	b.mu.Lock()
	defer b.mu.Unlock()
	w, ok := b.watches[service]
	if !ok {
		w = startWatch(b, service, b.lastKnown[service])
		delete(b.lastKnown, service)
		b.watches[service] = w
	}
	w.refs++
	return w
}

func (b *Builder) release(w *serviceWatch) {
	b.mu.Lock()
	w.refs--
	last := w.refs == 0
	if last {
		delete(b.watches, w.service)
	}
	b.mu.Unlock()
	if !last {
		return
	}
	w.stop()
	// gRPC closes a channel's resolver when it goes idle and builds a new
	// one on the next call: keep the list so that one starts from it.
	if snap := w.current(); snap.listed {
		b.mu.Lock()
		if _, watched := b.watches[w.service]; !watched {
			b.lastKnown[w.service] = snap
		}
		b.mu.Unlock()
	}
}

// noInstances reports whether service's list, as last read from etcd, is
// empty.
func (b *Builder) noInstances(service string) bool {
	b.mu.Lock()
	w, ok := b.watches[service]
	b.mu.Unlock()
	if !ok {
		return false
	}
	snap := w.current()
	return snap.listed && len(snap.instances) == 0
}

// Explain turns gRPC's "no children to pick from", the error of a call on
// cc, into an error that names the service, when its list in etcd is
// really empty. Other errors it returns as they are.
func (b *Builder) Explain(cc *grpc.ClientConn, err error) error {
	if status.Code(err) != codes.Unavailable {
		return err
	}
	u, perr := url.Parse(cc.Target())
	if perr != nil || u.Scheme != b.scheme {
		return err
	}
	service := strings.TrimPrefix(u.Path, "/")
	if !b.noInstances(service) {
		return err
	}
	return status.Errorf(codes.Unavailable, "no instance of service %q is registered in etcd (under %q)", service, discovery.Prefix(b.namespace, service))
}

// UnaryClientInterceptor makes calls that fail because no instance of the
// dialed service is registered say so, naming the service.
func (b *Builder) UnaryClientInterceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		return b.Explain(cc, invoker(ctx, method, req, reply, cc, opts...))
	}
}

// StreamClientInterceptor is UnaryClientInterceptor for streams.
func (b *Builder) StreamClientInterceptor() grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		s, err := streamer(ctx, desc, cc, method, opts...)
		return s, b.Explain(cc, err)
	}
}
