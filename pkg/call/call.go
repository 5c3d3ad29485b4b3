// Package call dials a service by name through etcd with rollcall's
// defaults: per-call load-aware balancing over healthy instances
// (balance.P2CEWMA), retries of idempotent methods on another instance,
// also when an attempt gets no answer, keepalive, and a deadline on every
// call.
package call

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	_ "google.golang.org/grpc/health" // client-side health checking
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/rollcall/rollcall/pkg/balance"
	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/discovery/resolve"
	"github.com/rollcall/rollcall/pkg/tlsfiles"
)

// DefaultTimeout is the deadline of a call whose context has none.
const DefaultTimeout = 10 * time.Second

// DefaultPolicy is the balancing policy of the default service config:
// rollcall's power of two choices by EWMA latency, which honours
// registered weights, avoids slow instances and skips stalled ones, and
// measured no cost against round_robin in the kill, term, rolling and
// throughput scenarios (docs/benchmarks.md).
const DefaultPolicy = balance.P2CEWMA

// Option changes Dial's defaults.
type Option func(*options)

type options struct {
	policy        string
	serviceConfig string
	timeout       time.Duration
	creds         credentials.TransportCredentials
	tls           tlsfiles.Files
	dialOpts      []grpc.DialOption
}

// WithPolicy sets the balancing policy of the default service config:
// balance.P2CEWMA (the default), balance.Weighted, round_robin, or any
// registered policy that needs no configuration.
func WithPolicy(name string) Option { return func(o *options) { o.policy = name } }

// WithServiceConfig replaces the default service config (see
// ServiceConfig), e.g. to pick another balancing policy.
func WithServiceConfig(json string) Option { return func(o *options) { o.serviceConfig = json } }

// WithDefaultTimeout sets the deadline of calls whose context has none.
func WithDefaultTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithTransportCredentials sets TLS; the default is plaintext.
func WithTransportCredentials(c credentials.TransportCredentials) Option {
	return func(o *options) { o.creds = c }
}

// WithTLS makes calls over TLS when f names any file: the server's
// certificate is verified against f.CA (the system's roots if empty) for
// the service name dialed, and f.Cert and f.Key are presented for mutual
// TLS. With no file named, calls stay plaintext.
func WithTLS(f tlsfiles.Files) Option { return func(o *options) { o.tls = f } }

// RegisterTLSFlags adds -call-tls-ca, -call-tls-cert and -call-tls-key to
// fs, setting f, and their environment fallbacks CALL_TLS_CA, CALL_TLS_CERT
// and CALL_TLS_KEY to env. Pass f to WithTLS.
func RegisterTLSFlags(f *tlsfiles.Files, fs *flag.FlagSet, env map[string]string) {
	fs.StringVar(&f.CA, "call-tls-ca", f.CA, "call services over TLS, verifying them against this CA (PEM)")
	fs.StringVar(&f.Cert, "call-tls-cert", f.Cert, "client certificate for mutual TLS (PEM)")
	fs.StringVar(&f.Key, "call-tls-key", f.Key, "key of -call-tls-cert (PEM)")
	env["call-tls-ca"], env["call-tls-cert"], env["call-tls-key"] = "CALL_TLS_CA", "CALL_TLS_CERT", "CALL_TLS_KEY"
}

// WithDialOptions adds gRPC dial options after rollcall's, so they win.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOpts = append(o.dialOpts, opts...) }
}

// Dial returns a connection to every registered instance of service,
// resolved by rb. It does no I/O: connections open on the first call.
func Dial(rb *resolve.Builder, service string, opts ...Option) (*grpc.ClientConn, error) {
	if err := discovery.ValidateService(service); err != nil {
		return nil, err
	}
	o := options{policy: DefaultPolicy, timeout: DefaultTimeout, creds: insecure.NewCredentials()}
	for _, opt := range opts {
		opt(&o)
	}
	if o.serviceConfig == "" {
		o.serviceConfig = ServiceConfig(service, o.policy)
	}
	if o.tls.Set() {
		cfg, err := o.tls.Client()
		if err != nil {
			return nil, fmt.Errorf("dial %s: TLS: %w", service, err)
		}
		o.creds = credentials.NewTLS(cfg)
	}
	dialOpts := append([]grpc.DialOption{
		grpc.WithResolvers(rb),
		grpc.WithTransportCredentials(o.creds),
		grpc.WithDefaultServiceConfig(o.serviceConfig),
		// Addresses come from etcd: never send them through $HTTPS_PROXY.
		grpc.WithNoProxy(),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 20 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
		grpc.WithChainUnaryInterceptor(unary(o.timeout, idempotentMethods(), rb)),
		grpc.WithChainStreamInterceptor(rb.StreamClientInterceptor()),
	}, o.dialOpts...)
	conn, err := grpc.NewClient(rb.Target(service), dialOpts...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", service, err)
	}
	return conn, nil
}

// Attempts of an idempotent call: each gets a third of the time left, so
// a call sent to an instance that stopped answering (SIGSTOP, a stuck
// host) is tried again elsewhere before its deadline. gRPC's retry policy
// covers failures; it has no per-attempt timeout for silence.
const maxAttempts = 3

// unary gives a call without a deadline the default one, runs calls of
// idempotent methods in attempts, and names the service when no instance
// of it is registered. One interceptor rather than a chain of three: every
// link of a chain costs each call a closure.
func unary(timeout time.Duration, idempotent map[string]bool, rb *resolve.Builder) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		deadline, ok := ctx.Deadline()
		if !ok && timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
			deadline, ok = ctx.Deadline()
		}
		if !ok || !idempotent[method] {
			return rb.Explain(cc, invoker(ctx, method, req, reply, cc, opts...))
		}
		for range maxAttempts - 1 {
			now := time.Now()
			actx, cancel := context.WithDeadline(ctx, now.Add(deadline.Sub(now)/3))
			err := invoker(actx, method, req, reply, cc, opts...)
			cancel()
			if status.Code(err) != codes.DeadlineExceeded || ctx.Err() != nil {
				return rb.Explain(cc, err)
			}
		}
		return rb.Explain(cc, invoker(ctx, method, req, reply, cc, opts...))
	}
}

// ServiceConfig returns rollcall's default service config for service:
//
//   - policy per call (DefaultPolicy unless set) over instances whose
//     health service reports service SERVING (serve marks them so, and
//     NOT_SERVING when they stop);
//   - calls of idempotent methods (proto option idempotency_level
//     NO_SIDE_EFFECTS or IDEMPOTENT, in any linked proto package) retried
//     on UNAVAILABLE, so an instance killed mid-call costs no call;
//   - retry throttling that lets a burst of such retries through.
func ServiceConfig(service, policy string) string {
	type name struct {
		Service string `json:"service"`
		Method  string `json:"method,omitempty"`
	}
	type retryPolicy struct {
		MaxAttempts          int      `json:"maxAttempts"`
		InitialBackoff       string   `json:"initialBackoff"`
		MaxBackoff           string   `json:"maxBackoff"`
		BackoffMultiplier    float64  `json:"backoffMultiplier"`
		RetryableStatusCodes []string `json:"retryableStatusCodes"`
	}
	type methodConfig struct {
		Name        []name       `json:"name"`
		RetryPolicy *retryPolicy `json:"retryPolicy,omitempty"`
	}
	var idempotent []name
	for full := range idempotentMethods() {
		svc, method, _ := strings.Cut(strings.TrimPrefix(full, "/"), "/")
		idempotent = append(idempotent, name{Service: svc, Method: method})
	}
	slices.SortFunc(idempotent, func(a, b name) int {
		if a.Service != b.Service {
			return strings.Compare(a.Service, b.Service)
		}
		return strings.Compare(a.Method, b.Method)
	})
	cfg := map[string]any{
		"loadBalancingConfig": []any{map[string]any{policy: map[string]any{}}},
		"healthCheckConfig":   map[string]any{"serviceName": service},
		// Tokens drop by 1 per failed attempt and retries stop below half:
		// 500 lets a burst of 250 failures retry, far above what one
		// instance has in flight.
		"retryThrottling": map[string]any{"maxTokens": 500, "tokenRatio": 0.1},
	}
	if len(idempotent) > 0 {
		cfg["methodConfig"] = []methodConfig{{
			Name: idempotent,
			RetryPolicy: &retryPolicy{
				MaxAttempts: 4, InitialBackoff: "0.01s", MaxBackoff: "0.1s", BackoffMultiplier: 2,
				RetryableStatusCodes: []string{"UNAVAILABLE"},
			},
		}}
	}
	out, err := json.Marshal(cfg)
	if err != nil {
		panic(err) // static shapes: cannot fail
	}
	return string(out)
}

// idempotentMethods lists, as "/package.Service/Method", the methods of
// every linked proto file whose idempotency_level is NO_SIDE_EFFECTS or
// IDEMPOTENT.
func idempotentMethods() map[string]bool {
	methods := map[string]bool{}
	protoregistry.GlobalFiles.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		for i := range fd.Services().Len() {
			sd := fd.Services().Get(i)
			for j := range sd.Methods().Len() {
				if md := sd.Methods().Get(j); isIdempotent(md) {
					methods["/"+string(sd.FullName())+"/"+string(md.Name())] = true
				}
			}
		}
		return true
	})
	return methods
}

func isIdempotent(md protoreflect.MethodDescriptor) bool {
	opts, ok := md.Options().(*descriptorpb.MethodOptions)
	if !ok || opts == nil {
		return false
	}
	switch opts.GetIdempotencyLevel() {
	case descriptorpb.MethodOptions_NO_SIDE_EFFECTS, descriptorpb.MethodOptions_IDEMPOTENT:
		return true
	}
	return false
}
