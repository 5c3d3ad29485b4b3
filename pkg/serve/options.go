package serve

import (
	"log/slog"

	"google.golang.org/grpc"

	"github.com/rollcall/rollcall/pkg/discovery/register"
)

// Option changes what New builds.
type Option func(*options)

type options struct {
	server   []grpc.ServerOption
	register []register.Option
	log      *slog.Logger
}

// WithServerOptions adds options to the gRPC server, e.g. interceptors or
// a stats handler: after serve's keepalive enforcement policy, before
// the TLS credentials of Config.TLS.
func WithServerOptions(opts ...grpc.ServerOption) Option {
	return func(o *options) { o.server = append(o.server, opts...) }
}

// WithRegisterOptions adds options to the registration that Run makes,
// after serve's own (namespace, TTL, logger), e.g. an observer for
// metrics.
func WithRegisterOptions(opts ...register.Option) Option {
	return func(o *options) { o.register = append(o.register, opts...) }
}

// WithLogger sets where the server and its registration log (default
// slog.Default()).
func WithLogger(log *slog.Logger) Option {
	return func(o *options) { o.log = log }
}
