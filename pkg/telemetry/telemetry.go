// Package telemetry gives a process Prometheus metrics on an HTTP port of
// its own and OpenTelemetry tracing of its gRPC calls. Each is off unless
// configured, and costs nothing when off:
//
//   - -metrics-listen (METRICS_LISTEN), e.g. 127.0.0.1:9464, serves
//     /metrics: gRPC server and client metrics of go-grpc-middleware
//     (grpc_server_handled_total, grpc_server_handling_seconds,
//     grpc_client_handled_total, grpc_client_handling_seconds, ...),
//     discovery's (rollcall_discovery_*, see package discoverymetrics),
//     the call path's (rollcall_call_*, package callmetrics), the
//     balancers' (rollcall_balance_*: zones, ejections, panic mode, slow
//     start; package balancemetrics), and the Go runtime's and the
//     process's (go_*, process_*).
//   - -otlp-endpoint (OTEL_EXPORTER_OTLP_ENDPOINT), e.g.
//     http://127.0.0.1:4317, exports a span of every gRPC call over
//     OTLP/gRPC, and calls carry their trace context (W3C traceparent) from
//     client to server. OpenTelemetry reads its other variables itself:
//     OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER,
//     OTEL_EXPORTER_OTLP_HEADERS, OTEL_EXPORTER_OTLP_CERTIFICATE, ...
//
// A process makes one Telemetry and hands its options to what it builds:
//
//	tel, cleanup, err := telemetry.New(cfg.Telemetry, log)
//	defer cleanup()
//	srv, err := serve.New(cfg.Serve, etcd, serve.WithServerOptions(tel.ServerOptions()...),
//		serve.WithRegisterOptions(tel.RegisterOptions()...))
//	rb, err := resolve.NewBuilder(etcd, tel.ResolveOptions()...)
//	conn, err := call.Dial(rb, "greeter", call.WithDialOptions(tel.DialOptions()...))
package telemetry

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/go-logr/logr"
	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"

	"github.com/rollcall/rollcall/pkg/balance/balancemetrics"
	"github.com/rollcall/rollcall/pkg/call"
	"github.com/rollcall/rollcall/pkg/call/callmetrics"
	"github.com/rollcall/rollcall/pkg/discovery/discoverymetrics"
	"github.com/rollcall/rollcall/pkg/discovery/register"
	"github.com/rollcall/rollcall/pkg/discovery/resolve"
)

// Config says where metrics are served and where spans go.
type Config struct {
	// MetricsListen is the address of the metrics HTTP server, e.g.
	// "127.0.0.1:9464" or ":9464"; empty: no metrics.
	MetricsListen string
	// OTLPEndpoint is the URL of an OTLP/gRPC collector, e.g.
	// "http://127.0.0.1:4317" (http: plaintext, https: TLS); empty: no
	// tracing.
	OTLPEndpoint string
	// ServiceName is the service.name of this process's spans unless
	// OTEL_SERVICE_NAME says otherwise.
	ServiceName string
	// TracerProvider, when set, traces gRPC calls instead of an exporter
	// made from OTLPEndpoint: for tests (an in-memory span recorder), or
	// for a program that built its own. Its owner shuts it down.
	TracerProvider trace.TracerProvider
}

// RegisterFlags adds -metrics-listen and -otlp-endpoint to fs, and their
// environment fallbacks METRICS_LISTEN and OTEL_EXPORTER_OTLP_ENDPOINT to
// env.
func (c *Config) RegisterFlags(fs *flag.FlagSet, env map[string]string) {
	fs.StringVar(&c.MetricsListen, "metrics-listen", c.MetricsListen, "address of the Prometheus /metrics HTTP server, e.g. 127.0.0.1:9464 (default: no metrics)")
	fs.StringVar(&c.OTLPEndpoint, "otlp-endpoint", c.OTLPEndpoint, "OTLP/gRPC collector URL for traces, e.g. http://127.0.0.1:4317 (default: no tracing)")
	env["metrics-listen"], env["otlp-endpoint"] = "METRICS_LISTEN", "OTEL_EXPORTER_OTLP_ENDPOINT"
}

// Validate checks every field; errors name the bad value.
func (c Config) Validate() error {
	var errs []error
	if c.MetricsListen != "" {
		if _, port, err := net.SplitHostPort(c.MetricsListen); err != nil {
			errs = append(errs, fmt.Errorf("invalid metrics-listen address %q: %w", c.MetricsListen, err))
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			errs = append(errs, fmt.Errorf("invalid metrics-listen address %q: port must be 0-65535", c.MetricsListen))
		}
	}
	if c.OTLPEndpoint != "" {
		// The exporter would ignore a URL it cannot parse and send to
		// localhost instead, without a word.
		if u, err := url.Parse(c.OTLPEndpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("invalid OTLP endpoint %q: want http://host:port or https://host:port", c.OTLPEndpoint))
		}
	}
	return errors.Join(errs...)
}

// Telemetry is a process's metrics registry, metrics server and tracer.
type Telemetry struct {
	registry    *prometheus.Registry
	metricsAddr string // empty when metrics are off

	// Set when metrics are on.
	server    *grpcprom.ServerMetrics
	client    *grpcprom.ClientMetrics
	discovery *discoverymetrics.Metrics
	calls     *callmetrics.Metrics
	balance   *balancemetrics.Metrics

	// Set when tracing is on.
	tracer     trace.TracerProvider
	propagator propagation.TextMapPropagator
}

// Timeouts of the cleanup: a scrape in progress may finish, and spans
// still buffered are sent. An export, retries included, is cut before the
// shutdown gives up, so that none outlives the cleanup.
const (
	metricsShutdownTimeout = 2 * time.Second
	traceExportTimeout     = 4 * time.Second
	traceShutdownTimeout   = traceExportTimeout + time.Second
)

// New validates cfg, starts the metrics server when cfg.MetricsListen is
// set (a taken port fails here), and the span exporter when
// cfg.OTLPEndpoint is set. The cleanup stops the server and flushes spans.
//
// With tracing on from cfg, New also routes OpenTelemetry's own log and
// errors (a collector that does not answer, say) into log, process-wide.
func New(cfg Config, log *slog.Logger) (*Telemetry, func(), error) {
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	t := &Telemetry{registry: prometheus.NewRegistry(), tracer: cfg.TracerProvider}
	var cleanups []func()
	cleanup := func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}

	if t.tracer == nil && cfg.OTLPEndpoint != "" {
		tp, err := newTracerProvider(cfg, log)
		if err != nil {
			return nil, nil, err
		}
		t.tracer = tp
		cleanups = append(cleanups, func() {
			ctx, cancel := context.WithTimeout(context.Background(), traceShutdownTimeout)
			defer cancel()
			if err := tp.Shutdown(ctx); err != nil {
				log.Warn("flushing spans failed; some are lost", "err", err)
			}
		})
		log.Info("tracing gRPC calls", "otlp_endpoint", cfg.OTLPEndpoint)
	}
	if t.tracer != nil {
		t.propagator = propagation.TraceContext{}
	}

	if cfg.MetricsListen != "" {
		stop, err := t.serveMetrics(cfg.MetricsListen, log)
		if err != nil {
			cleanup()
			return nil, nil, err
		}
		cleanups = append(cleanups, stop)
	}
	return t, cleanup, nil
}

func newTracerProvider(cfg Config, log *slog.Logger) (*sdktrace.TracerProvider, error) {
	otel.SetLogger(logr.FromSlogHandler(log.Handler()))
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("opentelemetry", "err", err) }))
	// Later sources win: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
	// over the service's own name.
	res, err := resource.New(context.Background(),
		resource.WithAttributes(attribute.String("service.name", cfg.ServiceName)),
		resource.WithFromEnv(),
		resource.WithTelemetrySDK(),
	)
	if err != nil {
		if res == nil {
			return nil, fmt.Errorf("trace resource: %w", err)
		}
		log.Warn("trace resource is partial", "err", err)
	}
	// New does no I/O: an unreachable collector costs lost spans and a
	// warning, never a failed start.
	exp, err := otlptracegrpc.New(context.Background(), otlptracegrpc.WithEndpointURL(cfg.OTLPEndpoint))
	if err != nil {
		return nil, fmt.Errorf("OTLP exporter for %s: %w", cfg.OTLPEndpoint, err)
	}
	// The sampler is OpenTelemetry's default, parent-based always-on,
	// unless OTEL_TRACES_SAMPLER says otherwise.
	return sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp, sdktrace.WithExportTimeout(traceExportTimeout)),
		sdktrace.WithResource(res),
	), nil
}

// serveMetrics listens on addr and serves /metrics from its own
// goroutine, which the returned stop ends and waits for.
func (t *Telemetry) serveMetrics(addr string, log *slog.Logger) (stop func(), err error) {
	t.server = grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram())
	t.client = grpcprom.NewClientMetrics(grpcprom.WithClientHandlingTimeHistogram())
	for _, c := range []prometheus.Collector{
		t.server, t.client,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := t.registry.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	if t.discovery, err = discoverymetrics.New(t.registry); err != nil {
		return nil, err
	}
	if t.calls, err = callmetrics.New(t.registry); err != nil {
		return nil, err
	}
	if t.balance, err = balancemetrics.New(t.registry); err != nil {
		return nil, err
	}

	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for metrics on %s: %w", addr, err)
	}
	t.metricsAddr = lis.Addr().String()
	errLog := slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(t.registry, promhttp.HandlerOpts{ErrorLog: errLog, Registry: t.registry}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ErrorLog: errLog}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "addr", t.metricsAddr, "err", err)
		}
	}()
	log.Info("serving metrics", "addr", t.metricsAddr, "path", "/metrics")
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), metricsShutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			srv.Close()
		}
		<-done
	}, nil
}

// MetricsAddr is the address the metrics server listens on, its port
// resolved; empty when metrics are off.
func (t *Telemetry) MetricsAddr() string { return t.metricsAddr }

// Registerer is where a program registers metrics of its own; they are
// served with the others when metrics are on.
func (t *Telemetry) Registerer() prometheus.Registerer { return t.registry }

// TracerProvider makes spans of the program's own that join the gRPC
// calls' traces; it makes no spans when tracing is off.
func (t *Telemetry) TracerProvider() trace.TracerProvider {
	if t.tracer == nil {
		return tracenoop.NewTracerProvider()
	}
	return t.tracer
}

// ServerOptions are the options of a gRPC server: metrics interceptors
// and a tracing stats handler, each when on.
func (t *Telemetry) ServerOptions() []grpc.ServerOption {
	var opts []grpc.ServerOption
	if t.server != nil {
		opts = append(opts,
			grpc.ChainUnaryInterceptor(t.server.UnaryServerInterceptor()),
			grpc.ChainStreamInterceptor(t.server.StreamServerInterceptor()))
	}
	if t.tracer != nil {
		opts = append(opts, grpc.StatsHandler(otelgrpc.NewServerHandler(t.otelOptions()...)))
	}
	return opts
}

// DialOptions are the options of a gRPC client connection: metrics
// interceptors and a tracing stats handler, each when on.
//
// The metrics interceptors take gRPC's outermost slot
// (grpc.WithUnaryInterceptor and grpc.WithStreamInterceptor), ahead of
// every chained interceptor, so that they count calls as the program sees
// them, not each attempt of package call's retries and hedges. A later
// grpc.WithUnaryInterceptor would replace them; chain instead.
func (t *Telemetry) DialOptions() []grpc.DialOption {
	var opts []grpc.DialOption
	if t.client != nil {
		opts = append(opts,
			grpc.WithUnaryInterceptor(t.client.UnaryClientInterceptor()),
			grpc.WithStreamInterceptor(t.client.StreamClientInterceptor()))
	}
	if t.tracer != nil {
		opts = append(opts, grpc.WithStatsHandler(otelgrpc.NewClientHandler(t.otelOptions()...)))
	}
	return opts
}

func (t *Telemetry) otelOptions() []otelgrpc.Option {
	return []otelgrpc.Option{
		otelgrpc.WithTracerProvider(t.tracer),
		otelgrpc.WithPropagators(t.propagator),
		// Call metrics come from Prometheus; no second set.
		otelgrpc.WithMeterProvider(metricnoop.NewMeterProvider()),
	}
}

// RegisterOptions make a registration report to the discovery metrics,
// when metrics are on.
func (t *Telemetry) RegisterOptions() []register.Option {
	if t.discovery == nil {
		return nil
	}
	return []register.Option{t.discovery.RegisterOption()}
}

// CallOptions make call.Dial report its extra attempts and retry budget
// to the call metrics, and its balancers to the balance metrics, when
// metrics are on.
func (t *Telemetry) CallOptions() []call.Option {
	if t.calls == nil {
		return nil
	}
	return []call.Option{call.WithObserver(t.calls), call.WithBalanceObserver(t.balance)}
}

// ResolveOptions make a resolver Builder report to the discovery metrics,
// when metrics are on.
func (t *Telemetry) ResolveOptions() []resolve.Option {
	if t.discovery == nil {
		return nil
	}
	return []resolve.Option{t.discovery.ResolveOption()}
}
