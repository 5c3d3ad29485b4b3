// Package call dials a service by name through etcd with rollcall's
// defaults: per-call load-aware balancing over healthy instances
// (balance.P2CEWMA), keepalive, a deadline on every call, and for the
// methods a proto marks idempotent, retries on another instance, hedging,
// and cutting attempts whose instance stalled, all within one retry budget.
//
// Every attempt of a call has the caller's whole deadline: no attempt is
// shortened, so a method that takes most of its deadline succeeds as it
// would on a plain connection. A call makes at most MaxAttempts attempts:
//
//   - after UNAVAILABLE (the instance died, refused or is unreachable), the
//     call is tried again on another instance;
//   - when no answer has come after the hedge delay (the method's recent
//     HedgeQuantile latency, at least MinHedgeDelay, or WithHedgeDelay's),
//     one more attempt goes to another instance, if it can still answer
//     in time; the first answer wins and the other attempt is cancelled;
//   - when an instance stops sending heartbeats (a stopped process, a
//     stuck host), attempts in flight on it are cancelled and tried again
//     elsewhere at once, with the time left.
//
// Every attempt after a call's first, of any kind, takes a token from the
// connection's retry budget: at most DefaultBudgetRatio of the calls of
// the last ten seconds plus DefaultBudgetPerSecond a second. Without a
// token no extra attempt is sent, and a stalled attempt is left to wait
// as it would on a plain connection. gRPC's own retry policy is not used
// (it would multiply with these, outside the budget); grpc-go implements
// no hedging policy, so hedging here is rollcall's own.
package call

import (
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	_ "google.golang.org/grpc/health" // client-side health checking
	"google.golang.org/grpc/keepalive"
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
	policy          string
	serviceConfig   string
	timeout         time.Duration
	creds           credentials.TransportCredentials
	tls             tlsfiles.Files
	dialOpts        []grpc.DialOption
	hedging         bool
	hedgeDelays     map[string]time.Duration
	budgetRatio     float64
	budgetPerSecond float64
	observer        Observer
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

// WithHedgeDelay fixes the hedge delay of one idempotent method, named
// "/package.Service/Method"; 0 turns hedging off for it. Methods not
// named adapt their delay to their recent latencies.
func WithHedgeDelay(method string, d time.Duration) Option {
	return func(o *options) {
		if o.hedgeDelays == nil {
			o.hedgeDelays = map[string]time.Duration{}
		}
		o.hedgeDelays[method] = max(d, 0)
	}
}

// WithoutHedging turns hedging off for every method not named by
// WithHedgeDelay.
func WithoutHedging() Option { return func(o *options) { o.hedging = false } }

// WithRetryBudget sets the connection's retry budget: extra attempts at
// most ratio times the calls of the last ten seconds, plus perSecond for
// each of those seconds. Both 0: no extra attempt at all.
func WithRetryBudget(ratio, perSecond float64) Option {
	return func(o *options) { o.budgetRatio, o.budgetPerSecond = max(ratio, 0), max(perSecond, 0) }
}

// WithObserver has the attempts machinery report to obs (extra attempts,
// refusals, the budget).
func WithObserver(obs Observer) Option { return func(o *options) { o.observer = obs } }

// WithDialOptions adds gRPC dial options after rollcall's, so they win.
// Interceptors added here see each call once, whatever attempts rollcall
// makes below them; stats handlers see each attempt.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOpts = append(o.dialOpts, opts...) }
}

// Dial returns a connection to every registered instance of service,
// resolved by rb. It does no I/O: connections open on the first call.
func Dial(rb *resolve.Builder, service string, opts ...Option) (*grpc.ClientConn, error) {
	if err := discovery.ValidateService(service); err != nil {
		return nil, err
	}
	o := options{policy: DefaultPolicy, timeout: DefaultTimeout, creds: insecure.NewCredentials(), hedging: true,
		budgetRatio: DefaultBudgetRatio, budgetPerSecond: DefaultBudgetPerSecond, observer: noObserver{}}
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
	}, o.dialOpts...)
	// Innermost, after the caller's interceptors: they see a call once.
	dialOpts = append(dialOpts,
		grpc.WithChainUnaryInterceptor(newCaller(service, &o, rb).unary),
		grpc.WithChainStreamInterceptor(rb.StreamClientInterceptor()))
	conn, err := grpc.NewClient(rb.Target(service), dialOpts...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", service, err)
	}
	return conn, nil
}

// ServiceConfig returns rollcall's default service config for service:
// policy per call (DefaultPolicy unless set) over instances whose health
// service reports service SERVING (serve marks them so, and NOT_SERVING
// when they stop). It has no retry policy: retries, hedges and cut
// attempts are Dial's interceptor's, within one budget (see the package
// doc).
func ServiceConfig(service, policy string) string {
	cfg := map[string]any{
		"loadBalancingConfig": []any{map[string]any{policy: map[string]any{}}},
		"healthCheckConfig":   map[string]any{"serviceName": service},
	}
	out, err := json.Marshal(cfg)
	if err != nil {
		panic(err) // static shapes: cannot fail
	}
	return string(out)
}

// IdempotentMethods lists, sorted, the methods Dial may retry: those of
// every linked proto file whose idempotency_level is NO_SIDE_EFFECTS or
// IDEMPOTENT, as "/package.Service/Method". The xDS control plane gives
// the same methods a retry policy, so both models retry the same calls.
func IdempotentMethods() []string { return slices.Sorted(maps.Keys(idempotentMethods())) }

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
