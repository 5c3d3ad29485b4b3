// Package serve runs a gRPC server that registers itself in etcd, in the
// order that loses no call: listen, serve health and reflection, mark
// SERVING, register. On shutdown the order reverses: mark NOT_SERVING,
// revoke the registration, wait a drain delay so clients drop the
// instance, then stop gracefully, bounded by a timeout.
package serve

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/discovery/register"
	"github.com/rollcall/rollcall/pkg/flagenv"
	"github.com/rollcall/rollcall/pkg/liveness"
	"github.com/rollcall/rollcall/pkg/tlsfiles"
)

// Defaults of the Config fields that New fills in when they are zero.
const (
	// DefaultDrainDelay is how long a stopping server keeps answering
	// after it deregistered: long enough for clients' etcd watches to
	// drop it.
	DefaultDrainDelay = time.Second
	// DefaultStopTimeout bounds the graceful stop.
	DefaultStopTimeout = 10 * time.Second
)

// Config says where a server listens and how it registers. New fills
// the zero fields that have a default.
type Config struct {
	// Listen is the address to listen on, e.g. ":50051" or "127.0.0.1:0".
	Listen string
	// Advertise is the host:port clients dial; empty means the listen
	// address, with 127.0.0.1 for a wildcard host.
	Advertise string
	// Service is the name the instance registers under and clients dial.
	Service string
	// ID identifies the instance; empty derives one from host and address.
	ID string
	// Namespace is the first segment of the etcd key; empty means
	// discovery.DefaultNamespace.
	Namespace string
	// TTL is the lease TTL of the registration; zero means
	// register.DefaultTTL.
	TTL     time.Duration
	Version string
	Zone    string
	Weight  uint
	Labels  flagenv.Map
	// DrainDelay is how long a stopping server keeps serving after it
	// deregistered, so that clients drop it before it stops. Zero means
	// DefaultDrainDelay; negative, no drain (for tests without clients to
	// wait for).
	DrainDelay time.Duration
	// StopTimeout bounds the graceful stop; then calls still running are
	// cut. Zero means DefaultStopTimeout.
	StopTimeout time.Duration
	// TLS: with Cert and Key the server speaks TLS; with CA too it
	// requires client certificates signed by CA (mutual TLS). Clients
	// verify the certificate against the service name they dial, so it
	// must carry Service as a DNS name. Off (plaintext) when empty.
	TLS tlsfiles.Files
}

// withDefaults returns c with its zero fields that have a default set to
// it, and a negative drain delay as none.
func (c Config) withDefaults() Config {
	c.Namespace = cmp.Or(c.Namespace, discovery.DefaultNamespace)
	c.TTL = cmp.Or(c.TTL, register.DefaultTTL)
	c.StopTimeout = cmp.Or(c.StopTimeout, DefaultStopTimeout)
	switch {
	case c.DrainDelay == 0:
		c.DrainDelay = DefaultDrainDelay
	case c.DrainDelay < 0:
		c.DrainDelay = 0
	}
	return c
}

// RegisterFlags adds the serving flags to fs, each with c's value as its
// default where c sets one, else the package default, and their
// environment fallbacks to env.
func (c *Config) RegisterFlags(fs *flag.FlagSet, env map[string]string) {
	fs.StringVar(&c.Listen, "listen", c.Listen, "address to listen on")
	fs.StringVar(&c.Advertise, "advertise", c.Advertise, "host:port clients dial (default: the listen address, 127.0.0.1 for a wildcard host)")
	fs.StringVar(&c.Service, "service", c.Service, "service name to register under")
	fs.StringVar(&c.ID, "id", c.ID, "instance ID (default: <hostname>-<advertised address>)")
	fs.StringVar(&c.Namespace, "namespace", cmp.Or(c.Namespace, discovery.DefaultNamespace), "first segment of etcd keys")
	fs.DurationVar(&c.TTL, "ttl", cmp.Or(c.TTL, register.DefaultTTL), "lease TTL of the registration")
	fs.StringVar(&c.Version, "version", c.Version, "version metadata")
	fs.StringVar(&c.Zone, "zone", c.Zone, "zone metadata")
	fs.UintVar(&c.Weight, "weight", c.Weight, "relative weight for weight-aware balancing (0 means 1)")
	fs.Var(&c.Labels, "labels", "labels metadata, k=v,k=v")
	c.DrainDelay = cmp.Or(c.DrainDelay, DefaultDrainDelay)
	fs.Var(drainDelayFlag{&c.DrainDelay}, "drain-delay", "how long to keep serving after deregistering, a `duration` (0: not at all)")
	fs.DurationVar(&c.StopTimeout, "stop-timeout", cmp.Or(c.StopTimeout, DefaultStopTimeout), "bound on the graceful stop")
	fs.StringVar(&c.TLS.Cert, "tls-cert", c.TLS.Cert, "serve TLS with this certificate (PEM; its DNS names must include the service name)")
	fs.StringVar(&c.TLS.Key, "tls-key", c.TLS.Key, "key of -tls-cert (PEM)")
	fs.StringVar(&c.TLS.CA, "tls-client-ca", c.TLS.CA, "require client certificates signed by this CA (mutual TLS)")
	for name, variable := range map[string]string{
		"listen": "LISTEN_ADDR", "advertise": "ADVERTISE_ADDR", "service": "SERVICE_NAME", "id": "INSTANCE_ID",
		"namespace": "DISCOVERY_NAMESPACE", "ttl": "REGISTER_TTL", "version": "INSTANCE_VERSION", "zone": "INSTANCE_ZONE",
		"weight": "INSTANCE_WEIGHT", "labels": "INSTANCE_LABELS", "drain-delay": "DRAIN_DELAY", "stop-timeout": "STOP_TIMEOUT",
		"tls-cert": "TLS_CERT", "tls-key": "TLS_KEY", "tls-client-ca": "TLS_CLIENT_CA",
	} {
		env[name] = variable
	}
}

// drainDelayFlag is -drain-delay. A flag always has a value, so 0 there
// means no drain, which a Config says with a negative DrainDelay.
type drainDelayFlag struct{ d *time.Duration }

func (f drainDelayFlag) String() string {
	if f.d == nil || *f.d < 0 {
		return "0s"
	}
	return f.d.String()
}

func (f drainDelayFlag) Set(value string) error {
	d, err := time.ParseDuration(value)
	if err != nil {
		return err
	}
	if d < 0 {
		return errors.New("want >= 0") // not a silent "no drain"
	}
	if d == 0 {
		d = -1
	}
	*f.d = d
	return nil
}

// Validate checks every field as given, so a zero TTL or stop timeout is
// an error here (New fills in the defaults first); errors name the bad
// value.
func (c Config) Validate() error {
	var errs []error
	if _, port, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("invalid listen address %q: %w", c.Listen, err))
	} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		errs = append(errs, fmt.Errorf("invalid listen address %q: port must be 0-65535", c.Listen))
	}
	if c.Advertise != "" {
		if err := discovery.ValidateAddr(c.Advertise); err != nil {
			errs = append(errs, fmt.Errorf("advertise: %w", err)) // name the flag, as the other errors do
		}
	}
	errs = append(errs, discovery.ValidateService(c.Service), discovery.ValidateNamespace(c.Namespace))
	if c.ID != "" {
		errs = append(errs, discovery.ValidateID(c.ID))
	}
	if c.TTL < time.Second {
		errs = append(errs, fmt.Errorf("invalid ttl %v: at least 1s", c.TTL))
	}
	if c.Weight > discovery.MaxWeight {
		errs = append(errs, fmt.Errorf("invalid weight %d: at most %d", c.Weight, discovery.MaxWeight))
	}
	if len(c.Labels) > discovery.MaxLabels {
		errs = append(errs, fmt.Errorf("%d labels: at most %d", len(c.Labels), discovery.MaxLabels))
	}
	if c.StopTimeout <= 0 {
		errs = append(errs, fmt.Errorf("invalid stop-timeout %v: want > 0", c.StopTimeout))
	}
	errs = append(errs, c.TLS.Validate())
	if c.TLS.CA != "" && c.TLS.Cert == "" {
		errs = append(errs, fmt.Errorf("tls-client-ca %q needs tls-cert and tls-key: mutual TLS is TLS first", c.TLS.CA))
	}
	return errors.Join(errs...)
}

// Server is a gRPC server with health, reflection and registration.
type Server struct {
	cfg    Config
	etcd   *clientv3.Client
	base   *slog.Logger // without the instance's attributes, which register adds
	log    *slog.Logger
	lis    net.Listener
	grpc   *grpc.Server
	health *health.Server
	// stopping is closed when GracefulStop begins.
	stopping chan struct{}
	inst     discovery.Instance
	reg      *register.Registration
	regOpts  []register.Option
}

var _ grpc.ServiceRegistrar = (*Server)(nil)

// New fills cfg's zero fields with the defaults, validates it and
// listens, so a taken port fails here, before anything registers.
// Register services on the result, then Run it.
func New(cfg Config, etcd *clientv3.Client, opts ...Option) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := options{log: slog.Default()}
	for _, opt := range opts {
		opt(&o)
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	advertise := cfg.Advertise
	if advertise == "" {
		host, _, _ := net.SplitHostPort(cfg.Listen)
		if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
			host = "127.0.0.1"
		}
		advertise = net.JoinHostPort(host, strconv.Itoa(lis.Addr().(*net.TCPAddr).Port))
	}
	inst := discovery.Instance{
		Service: cfg.Service, ID: cfg.ID, Addr: advertise,
		Metadata: discovery.Metadata{Version: cfg.Version, Zone: cfg.Zone, Weight: uint32(cfg.Weight), Labels: cfg.Labels},
	}
	if inst.ID == "" {
		inst.ID = discovery.DefaultID(advertise)
	}
	if err := inst.Validate(); err != nil {
		lis.Close()
		return nil, err
	}
	if cfg.TLS.Cert != "" {
		tlsCfg, err := cfg.TLS.Server()
		if err != nil {
			lis.Close()
			return nil, fmt.Errorf("serve TLS: %w", err)
		}
		o.server = append(o.server, grpc.Creds(credentials.NewTLS(tlsCfg)))
	}
	serverOpts := append([]grpc.ServerOption{
		// Accept the keepalive pings of rollcall's clients (every 20 s)
		// instead of closing their connections with too_many_pings.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	}, o.server...)
	s := &Server{
		cfg: cfg, etcd: etcd, lis: lis, inst: inst, base: o.log, regOpts: o.register,
		log:      o.log.With("service", cfg.Service, "instance", inst.ID, "addr", advertise),
		grpc:     grpc.NewServer(serverOpts...),
		health:   health.NewServer(),
		stopping: make(chan struct{}),
	}
	healthpb.RegisterHealthServer(s.grpc, liveness.NewHealthServer(s.health, s.stopping))
	reflection.Register(s.grpc)
	return s, nil
}

// Close releases the listener of a server that never ran; after Run it
// does nothing. Wire cleanups call it when a later constructor fails.
func (s *Server) Close() {
	s.grpc.Stop()
	s.lis.Close()
}

// RegisterService registers a gRPC service implementation.
func (s *Server) RegisterService(desc *grpc.ServiceDesc, impl any) {
	s.grpc.RegisterService(desc, impl)
}

// Instance is what the server registers.
func (s *Server) Instance() discovery.Instance { return s.inst }

// Registration is the server's registration while Run runs, else nil.
func (s *Server) Registration() *register.Registration { return s.reg }

// Run serves until ctx ends, then shuts down in order and returns nil, or
// returns the error that stopped serving.
func (s *Server) Run(ctx context.Context) error {
	served := make(chan error, 1)
	go func() { served <- s.grpc.Serve(s.lis) }()

	s.setServing(healthpb.HealthCheckResponse_SERVING)
	reg, err := register.New(s.etcd, s.inst, append([]register.Option{
		register.WithNamespace(s.cfg.Namespace), register.WithTTL(s.cfg.TTL), register.WithLogger(s.base)}, s.regOpts...)...)
	if err != nil {
		s.grpc.Stop()
		<-served
		return err
	}
	s.reg = reg
	tlsMode := "off"
	switch {
	case s.cfg.TLS.CA != "":
		tlsMode = "mutual"
	case s.cfg.TLS.Cert != "":
		tlsMode = "on"
	}
	s.log.Info("serving", "listen", s.lis.Addr().String(), "tls", tlsMode)

	select {
	case err := <-served:
		// The listener broke: stop in the usual order, which lets the
		// calls on open connections finish.
		if err == nil {
			err = errors.New("server stopped")
		}
		again := make(chan error, 1)
		again <- err
		s.shutdown(reg, again, true)
		return fmt.Errorf("serve %s: %w", s.lis.Addr(), err)
	case <-reg.Done():
		// etcd denied the registration, or another live process holds
		// this instance's ID: no client would find this instance, so stop
		// and say why rather than serve unseen; in the usual order, for
		// clients that found it before.
		st := reg.State()
		err := st.Err
		if st.Phase == register.Denied {
			s.log.Error("etcd denies the registration: stopping; a key written before stays until its lease expires",
				"key", reg.Key(), "ttl", s.cfg.TTL)
		} else {
			s.log.Error("the registration stopped: stopping", "key", reg.Key(), "err", err)
		}
		s.shutdown(reg, served, false)
		return err
	case <-ctx.Done():
	}
	return s.shutdown(reg, served, true)
}

func (s *Server) setServing(status healthpb.HealthCheckResponse_ServingStatus) {
	s.health.SetServingStatus("", status)
	s.health.SetServingStatus(s.cfg.Service, status)
	for name := range s.grpc.GetServiceInfo() {
		s.health.SetServingStatus(name, status)
	}
}

// RevokeTimeout bounds the deregistration on shutdown when etcd does not
// answer (then the lease expires by itself). Deployments add it to the
// drain delay and stop timeout to size their grace periods.
const RevokeTimeout = 2 * time.Second

// shutdown: NOT_SERVING, deregister (when revoke: etcd may refuse it),
// drain, graceful stop with a bound. Every etcd call is bounded by
// RevokeTimeout, so an unreachable etcd delays the stop by that at most.
func (s *Server) shutdown(reg *register.Registration, served <-chan error, revoke bool) error {
	s.log.Info("stopping: not serving, deregistering, draining", "drain", s.cfg.DrainDelay)
	s.health.Shutdown() // every status NOT_SERVING: health-checking clients stop picking us
	revokeCtx, cancelRevoke := context.WithTimeout(context.Background(), RevokeTimeout)
	if !revoke {
		cancelRevoke() // Close then only ends the registration's work
	}
	if err := reg.Close(revokeCtx); err != nil && revoke {
		s.log.Warn("deregistering failed; the key expires with its lease", "err", err)
	}
	cancelRevoke()
	// Clients learn of the deregistration through their etcd watch; keep
	// answering meanwhile. This wait is the point, not a synchronization.
	time.Sleep(s.cfg.DrainDelay)
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.StopTimeout)
	defer cancel()
	close(s.stopping)
	stopped := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-ctx.Done():
		s.log.Warn("graceful stop timed out; cutting remaining calls", "timeout", s.cfg.StopTimeout)
		s.grpc.Stop()
		<-stopped
	}
	<-served
	s.log.Info("stopped")
	return nil
}
