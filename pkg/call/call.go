// Package call dials a service by name through etcd with rollcall's
// defaults: per-call load-aware balancing over healthy instances
// (balance.P2CEWMA) with its traffic management (zone-aware routing when
// WithZone names the client's zone, outlier ejection, slow start),
// a deadline on every call, and for the methods a proto marks
// idempotent, retries on another instance, hedging, and cutting attempts
// whose instance stalled, all within one retry budget.
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
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	_ "google.golang.org/grpc/health" // client-side health checking
	"google.golang.org/grpc/resolver"
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
	balanceObserver balance.Observer
	// traffic is the traffic management of rollcall's policies: its
	// fields go into the policy's config when an option set them.
	traffic    balance.Traffic
	trafficSet map[string]bool // JSON fields of balance.Traffic set by options
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

// WithZone sets the client's zone for zone-aware routing (see
// balance.Traffic.Zone): calls stay with the instances registered in zone
// (and those with no zone) while they hold their zone's share of the
// healthy capacity. "" (the default) turns it off. Like WithSlowStart and
// WithOutlierEjection, it applies to rollcall's policies; other policies,
// and a config given by WithServiceConfig, ignore it.
func WithZone(zone string) Option {
	return func(o *options) { o.traffic.Zone = zone; o.set("zone") }
}

// WithSlowStart sets the slow-start window of newly ready instances
// (default 10 s, see balance.Traffic.SlowStartWindow); 0 turns slow start
// off.
func WithSlowStart(window time.Duration) Option {
	return func(o *options) { o.traffic.SlowStartWindow = balance.Duration(window); o.set("slowStartWindow") }
}

// WithOutlierEjection sets when instances are ejected and when panic mode
// begins; start from balance.DefaultOutlierEjection(), the default.
// Dial fails with an error naming a value out of range.
func WithOutlierEjection(e balance.OutlierEjection) Option {
	return func(o *options) { o.traffic.OutlierEjection = e; o.set("outlierEjection") }
}

// WithoutOutlierEjection turns outlier ejection (and so panic mode) off.
func WithoutOutlierEjection() Option {
	e := balance.DefaultOutlierEjection()
	e.ConsecutiveFailures, e.FailurePercentage = 0, 0
	return WithOutlierEjection(e)
}

// WithBalanceObserver has the balancers of the connection (rollcall's
// policies) report to obs: zone routing, ejections, panic mode, slow
// start. Package balancemetrics exports them as Prometheus metrics.
func WithBalanceObserver(obs balance.Observer) Option {
	return func(o *options) { o.balanceObserver = obs }
}

func (o *options) set(field string) {
	if o.trafficSet == nil {
		o.trafficSet = map[string]bool{}
	}
	o.trafficSet[field] = true
}

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
		sc, err := serviceConfig(service, o.policy, o.policyConfig())
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", service, err)
		}
		o.serviceConfig = sc
	}
	if o.tls.Set() {
		cfg, err := o.tls.Client()
		if err != nil {
			return nil, fmt.Errorf("dial %s: TLS: %w", service, err)
		}
		o.creds = credentials.NewTLS(cfg)
	}
	var resolvers resolver.Builder = rb
	if o.balanceObserver != nil {
		resolvers = balance.WithObserver(rb, service, o.balanceObserver)
	}
	dialOpts := append([]grpc.DialOption{
		grpc.WithResolvers(resolvers),
		grpc.WithTransportCredentials(o.creds),
		grpc.WithDefaultServiceConfig(o.serviceConfig),
		// Addresses come from etcd: never send them through $HTTPS_PROXY.
		grpc.WithNoProxy(),
		// No gRPC keepalive: with it, grpc-go reads the clock on every
		// frame it receives, about 1 % of a small call's cost. Heartbeats
		// (package liveness) take its place: one every 100 ms keeps the
		// connection from looking idle to a NAT, and an instance that sends
		// none for 400 ms gets no calls until it does; a dead instance's
		// connection closes when its etcd lease ends. WithDialOptions can
		// add grpc.WithKeepaliveParams back.
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
	sc, err := serviceConfig(service, policy, map[string]any{})
	if err != nil {
		panic(err) // static shapes: cannot fail
	}
	return sc
}

// serviceConfig is ServiceConfig with the policy's config; a rollcall
// policy's is checked by its parser, so that a bad value fails Dial with
// an error naming it.
func serviceConfig(service, policy string, policyCfg map[string]any) (string, error) {
	cfg := map[string]any{
		"loadBalancingConfig": []any{map[string]any{policy: policyCfg}},
		"healthCheckConfig":   map[string]any{"serviceName": service},
	}
	out, err := json.Marshal(cfg)
	if err != nil {
		return "", err
	}
	if len(policyCfg) > 0 {
		js, err := json.Marshal(policyCfg)
		if err != nil {
			return "", err
		}
		if _, err := balancer.Get(policy).(balancer.ConfigParser).ParseConfig(js); err != nil {
			return "", err
		}
	}
	return string(out), nil
}

// policyConfig is the JSON config of the policy for the traffic options
// set; empty for a policy not rollcall's, which would reject the fields.
func (o *options) policyConfig() map[string]any {
	cfg := map[string]any{}
	if o.policy != balance.P2CEWMA && o.policy != balance.Weighted {
		return cfg
	}
	fields := map[string]any{"zone": o.traffic.Zone, "slowStartWindow": o.traffic.SlowStartWindow, "outlierEjection": o.traffic.OutlierEjection}
	for name := range o.trafficSet {
		cfg[name] = fields[name]
	}
	return cfg
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
