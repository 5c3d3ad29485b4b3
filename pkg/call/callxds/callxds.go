// Package callxds dials a service through an xDS control plane (rollcall's
// lookaside model, services/xds) instead of etcd: grpc-go's own xDS
// resolver and balancers pick the instance of each call, with the retry
// policy, outlier detection, localities and balancing policy the control
// plane serves. It is a package of its own because importing grpc-go's
// xDS support links a great deal into a binary: only xDS users pay for it.
package callxds

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/xds"

	"github.com/rollcall/rollcall/pkg/call"
	"github.com/rollcall/rollcall/pkg/discovery"
)

// Scheme is the target scheme of xDS: xds:///<service>.
const Scheme = "xds"

// Target returns the xDS target of service.
func Target(service string) string { return Scheme + ":///" + service }

// Bootstrap returns a bootstrap (gRFC A27) naming the control planes at
// servers, host:port each, in order of preference: a client that starts
// while the first is unreachable uses the next (gRFC A71). A client that
// loses its control plane later keeps the resources it received and
// reconnects to that one: grpc-go moves to the next only for resources it
// has never received. node names the client to the control
// plane (rollcall's serves every node alike). The servers may not delete
// a listener or cluster a client holds (ignore_resource_deletion): a
// control plane that lost etcd at its start cannot take a service away.
func Bootstrap(node string, servers ...string) ([]byte, error) {
	if len(servers) == 0 {
		return nil, errors.New("xDS bootstrap: no control plane address")
	}
	type server struct {
		URI      string              `json:"server_uri"`
		Creds    []map[string]string `json:"channel_creds"`
		Features []string            `json:"server_features"`
	}
	b := struct {
		Servers []server          `json:"xds_servers"`
		Node    map[string]string `json:"node"`
	}{Node: map[string]string{"id": node}}
	for _, s := range servers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			return nil, fmt.Errorf("xDS bootstrap: invalid control plane address %q: want host:port", s)
		}
		b.Servers = append(b.Servers, server{URI: s, Creds: []map[string]string{{"type": "insecure"}},
			Features: []string{"xds_v3", "ignore_resource_deletion"}})
	}
	return json.MarshalIndent(b, "", "  ")
}

// ControlPlanes returns the addresses of the control planes registered in
// etcd as instances of service (services/xds registers as "xds"), for
// Bootstrap.
// Values that do not decode are skipped. Pass ctx with a deadline: the
// etcd client waits for etcd to answer.
func ControlPlanes(ctx context.Context, etcd *clientv3.Client, namespace, service string) ([]string, error) {
	prefix := discovery.Prefix(namespace, service)
	resp, err := etcd.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list the xDS control planes under %q: %w", prefix, err)
	}
	var addrs []string
	for _, kv := range resp.Kvs {
		if inst, err := discovery.Decode(namespace, service, string(kv.Key), kv.Value); err == nil {
			addrs = append(addrs, inst.Addr)
		}
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("no xDS control plane is registered in etcd under %q", prefix)
	}
	return addrs, nil
}

// Option changes Dial's defaults.
type Option func(*options)

type options struct {
	bootstrap []byte
	timeout   time.Duration
	creds     credentials.TransportCredentials
	dialOpts  []grpc.DialOption
}

// WithBootstrap has the connection read its xDS configuration from json
// (see Bootstrap). Without it, grpc-go reads the file named by
// $GRPC_XDS_BOOTSTRAP, or the JSON in $GRPC_XDS_BOOTSTRAP_CONFIG.
func WithBootstrap(json []byte) Option { return func(o *options) { o.bootstrap = json } }

// WithDefaultTimeout sets the deadline of calls whose context has none
// (call.DefaultTimeout by default).
func WithDefaultTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithTransportCredentials sets the credentials of calls to instances;
// the default is plaintext.
func WithTransportCredentials(c credentials.TransportCredentials) Option {
	return func(o *options) { o.creds = c }
}

// WithDialOptions adds gRPC dial options after callxds's, so they win.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOpts = append(o.dialOpts, opts...) }
}

// Dial returns a connection to service through xDS. It does no I/O: the
// control plane is asked on the first call. Balancing, retries and
// ejection are what the control plane serves; Dial adds keepalive and a
// deadline on calls that have none.
func Dial(service string, opts ...Option) (*grpc.ClientConn, error) {
	if err := discovery.ValidateService(service); err != nil {
		return nil, err
	}
	o := options{timeout: call.DefaultTimeout, creds: insecure.NewCredentials()}
	for _, opt := range opts {
		opt(&o)
	}
	if o.bootstrap == nil && os.Getenv("GRPC_XDS_BOOTSTRAP") == "" && os.Getenv("GRPC_XDS_BOOTSTRAP_CONFIG") == "" {
		return nil, fmt.Errorf("dial %s through xDS: no bootstrap: pass WithBootstrap or set GRPC_XDS_BOOTSTRAP", service)
	}
	dialOpts := []grpc.DialOption{
		grpc.WithTransportCredentials(o.creds),
		grpc.WithNoProxy(),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 20 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
		grpc.WithChainUnaryInterceptor(deadline(o.timeout)),
	}
	if o.bootstrap != nil {
		// The only public way to give one connection its own bootstrap;
		// the global resolver reads the environment once per process.
		rb, err := xds.NewXDSResolverWithConfigForTesting(o.bootstrap)
		if err != nil {
			return nil, fmt.Errorf("dial %s through xDS: bootstrap: %w", service, err)
		}
		dialOpts = append(dialOpts, grpc.WithResolvers(rb))
	} else {
		dialOpts = append(dialOpts, grpc.WithResolvers(resolver.Get(Scheme)))
	}
	conn, err := grpc.NewClient(Target(service), append(dialOpts, o.dialOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("dial %s through xDS: %w", service, err)
	}
	return conn, nil
}

// deadline gives calls without a deadline one of d.
func deadline(d time.Duration) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if _, ok := ctx.Deadline(); !ok && d > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}
