package discovery

import (
	"context"
	"errors"
	"sync"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// lazyAuth authenticates to etcd on the first call that needs a token,
// not in clientv3.New, which does it synchronously: a process started
// while etcd is down would exit, where without auth it serves and
// registers once etcd answers. It sends the token as etcd's client does
// (metadata "token") and forgets it when etcd rejects it, so that the
// next call authenticates again.
type lazyAuth struct {
	user, password string

	mu    sync.Mutex // serializes authentication
	token string
	conn  *grpc.ClientConn // the etcd client's own, set once it exists
}

const authenticateMethod = "/etcdserverpb.Auth/Authenticate"

// GetRequestMetadata returns the token for every call but Authenticate's
// own, authenticating first when there is none.
func (a *lazyAuth) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	if ri, ok := credentials.RequestInfoFromContext(ctx); ok && ri.Method == authenticateMethod {
		return nil, nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.token == "" {
		if err := a.authenticateLocked(ctx); err != nil {
			return nil, err
		}
	}
	if a.token == "" {
		return nil, nil // auth is not enabled
	}
	return map[string]string{rpctypes.TokenFieldNameGRPC: a.token}, nil
}

func (a *lazyAuth) authenticate(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.authenticateLocked(ctx)
}

func (a *lazyAuth) authenticateLocked(ctx context.Context) error {
	if a.conn == nil {
		return errors.New("etcd client not ready")
	}
	resp, err := pb.NewAuthClient(a.conn).Authenticate(ctx, &pb.AuthenticateRequest{Name: a.user, Password: a.password})
	if err != nil {
		if errors.Is(rpctypes.Error(err), rpctypes.ErrAuthNotEnabled) {
			return nil
		}
		return rpctypes.Error(err)
	}
	a.token = resp.GetToken()
	return nil
}

// RequireTransportSecurity is false: etcd's own client sends the token
// over plaintext connections too.
func (a *lazyAuth) RequireTransportSecurity() bool { return false }

// forget drops the token when err says etcd no longer takes it.
func (a *lazyAuth) forget(err error) {
	switch rpctypes.Error(err) {
	case rpctypes.ErrInvalidAuthToken, rpctypes.ErrUserEmpty, rpctypes.ErrAuthOldRevision:
		a.mu.Lock()
		a.token = ""
		a.mu.Unlock()
	}
}

func (a *lazyAuth) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	err := invoker(ctx, method, req, reply, cc, opts...)
	if method != authenticateMethod { // it runs under a.mu
		a.forget(err)
	}
	return err
}

func (a *lazyAuth) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := streamer(ctx, desc, cc, method, opts...)
	a.forget(err)
	return s, err
}

// withLazyAuth moves cfg's user and password into a lazyAuth that the
// client made from cfg will use; attach gives it that client's connection.
func withLazyAuth(cfg *clientv3.Config) *lazyAuth {
	a := &lazyAuth{user: cfg.Username, password: cfg.Password}
	cfg.Username, cfg.Password = "", ""
	cfg.DialOptions = append(cfg.DialOptions, grpc.WithPerRPCCredentials(a),
		grpc.WithChainUnaryInterceptor(a.unary), grpc.WithChainStreamInterceptor(a.stream))
	return a
}

func (a *lazyAuth) attach(c *clientv3.Client) {
	a.mu.Lock()
	a.conn = c.ActiveConnection()
	a.mu.Unlock()
}
