package access_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/discovery/access"
	"github.com/rollcall/rollcall/pkg/discovery/discoverytest"
	"github.com/rollcall/rollcall/pkg/discovery/register"
	"github.com/rollcall/rollcall/pkg/discovery/resolve"
	"github.com/rollcall/rollcall/pkg/etcdtest"
	"github.com/rollcall/rollcall/pkg/flagenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var quiet = slog.New(slog.DiscardHandler)

// login connects to etcd as user; the test closes the client.
func login(t *testing.T, srv *etcdtest.Server, user, password string) (*clientv3.Client, error) {
	t.Helper()
	c, err := discovery.EtcdConfig{Endpoints: flagenv.List{srv.Endpoint()}, Username: user, Password: password}.NewClient()
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

// With auth on and a role per service, a service registers under its own
// name only, and a caller reads only what it calls.
func TestLeastPrivilege(t *testing.T) {
	srv := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	greeterSvc := access.Service{Name: "greeter"}
	clientSvc := access.Service{Name: "client", Calls: []string{"greeter"}}
	for _, s := range []access.Service{greeterSvc, clientSvc} {
		if err := access.Apply(ctx, srv.Client(), s, "secret-"+s.Name); err != nil {
			t.Fatal(err)
		}
		if err := access.Apply(ctx, srv.Client(), s, "secret-"+s.Name); err != nil {
			t.Fatalf("Apply again: %v", err)
		}
	}
	if err := access.Enable(ctx, srv.Client(), "secret-root"); err != nil {
		t.Fatal(err)
	}

	// A client whose login etcd did not answer in time logs in on its
	// first call: a wrong password fails there at the latest.
	wrong, err := login(t, srv, greeterSvc.User(), "wrong-password")
	if err == nil {
		_, err = wrong.Get(ctx, "rollcall/greeter/")
	}
	if err == nil {
		t.Fatal("a wrong password logged in")
	} else if strings.Contains(err.Error(), "wrong-password") {
		t.Fatalf("the error shows the password: %v", err)
	}
	asGreeter, err := login(t, srv, greeterSvc.User(), "secret-greeter")
	if err != nil {
		t.Fatal(err)
	}
	asClient, err := login(t, srv, clientSvc.User(), "secret-client")
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name    string
		as      *clientv3.Client
		service string
		want    register.Phase
	}{
		{"greeter registers as greeter", asGreeter, "greeter", register.Registered},
		{"greeter may not register as shop", asGreeter, "shop", register.Denied},
		{"client may not register as greeter", asClient, "greeter", register.Denied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inst := discovery.Instance{Service: tc.service, ID: "i-" + tc.name[:6], Addr: "127.0.0.1:1"}
			r := discoverytest.Register(t, tc.as, inst, register.WithLogger(quiet))
			st := awaitSettled(t, r)
			if st.Phase != tc.want {
				t.Fatalf("phase %v (err %v), want %v", st.Phase, st.Err, tc.want)
			}
			if tc.want != register.Denied {
				return
			}
			// The error says what was refused and what the role lacks.
			for _, want := range []string{"permission denied", `"rollcall/` + tc.service + `/"`, r.Key()} {
				if !strings.Contains(st.Err.Error(), want) {
					t.Errorf("error %q does not say %q", st.Err, want)
				}
			}
		})
	}

	// The caller resolves the greeter it may read.
	discoverytest.Register(t, asGreeter, discovery.Instance{Service: "greeter", ID: "g1", Addr: "127.0.0.1:2"}, register.WithLogger(quiet))
	lists := discoverytest.NewLists()
	rb, err := resolve.NewBuilder(asClient, resolve.WithLogger(quiet), resolve.WithObserver(lists.Observer()))
	if err != nil {
		t.Fatal(err)
	}
	discoverytest.Dial(t, rb, "greeter", "")
	lists.Await(t, "greeter", "g1")

	// It may not read another service's instances: etcd refuses the list,
	// and its calls say so.
	shop := discoverytest.Dial(t, rb, "shop", "")
	_, err = discoverytest.Call(context.Background(), shop, 5*time.Second)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "permission denied") || !strings.Contains(err.Error(), "rollcall/shop/") {
		t.Errorf("call to shop, which client may not resolve: %v; want UNAVAILABLE saying permission denied on rollcall/shop/", err)
	}
	if got := lists.History("shop"); len(got) != 0 {
		t.Errorf("lists of shop published: %v; want none", got)
	}
}

// awaitSettled waits until the registration is registered or denied.
func awaitSettled(t *testing.T, r *register.Registration) register.State {
	t.Helper()
	return discoverytest.AwaitState(t, r, "registered or denied", func(s register.State) bool {
		return s.Phase == register.Registered || s.Phase == register.Denied
	})
}

// registerAs keeps an instance of service registered through etcd client
// c, with lease TTL ttl, until the test ends.
func registerAs(t *testing.T, c *clientv3.Client, service, id string, ttl time.Duration) *register.Registration {
	t.Helper()
	return discoverytest.Register(t, c, discovery.Instance{Service: service, ID: id, Addr: "127.0.0.1:1"},
		register.WithLogger(quiet), register.WithTTL(ttl))
}

// awaitRegistered fails the test unless r settles registered; when says
// at what point of the test.
func awaitRegistered(t *testing.T, r *register.Registration, when string) {
	t.Helper()
	if st := awaitSettled(t, r); st.Phase != register.Registered {
		t.Fatalf("phase %v (err %v) %s, want registered", st.Phase, st.Err, when)
	}
}

// refused is true once etcd has refused a write of the registration.
func refused(s register.State) bool {
	return s.Err != nil && strings.Contains(s.Err.Error(), "permission denied")
}

func TestGrantsRejectBadNames(t *testing.T) {
	_, err := access.Service{Name: "greeter", Calls: []string{"Bad Name"}}.Grants()
	if err == nil || !strings.Contains(err.Error(), "Bad Name") {
		t.Fatalf("err %v, want one naming %q", err, "Bad Name")
	}
}

// startWithGreeterUser starts etcd with auth on, a root user whose
// password is "secret-root", and a user for the greeter service whose
// password is "secret-greeter".
func startWithGreeterUser(t *testing.T) (*etcdtest.Server, access.Service) {
	t.Helper()
	greeterSvc := access.Service{Name: "greeter"}
	return discoverytest.StartWithAuth(t, greeterSvc, "secret-greeter", "secret-root"), greeterSvc
}

// A process with an etcd user that starts while etcd is down gets its
// client at once and registers when etcd comes back, as a process without
// auth does, instead of failing at start.
func TestAuthenticatedProcessStartsWhileEtcdIsDown(t *testing.T) {
	srv, greeterSvc := startWithGreeterUser(t)
	srv.Stop()

	c, err := login(t, srv, greeterSvc.User(), "secret-greeter")
	if err != nil {
		t.Fatalf("etcd client with a user while etcd is down: %v; want one that logs in later", err)
	}
	r := discoverytest.Register(t, c, discovery.Instance{Service: "greeter", ID: "g1", Addr: "127.0.0.1:1"}, register.WithLogger(quiet))
	srv.Start()
	awaitRegistered(t, r, "once etcd is back")
}

// Operators edit a role by revoking and granting again: a registration
// refused meanwhile keeps trying and comes back, rather than giving up at
// the first refusal.
func TestRegistrationOutlivesARoleBeingEdited(t *testing.T) {
	greeterSvc, root, asGreeter := startLoggedIn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := registerAs(t, asGreeter, "greeter", "g1", 5*time.Second)
	awaitRegistered(t, r, "at first")

	// The edit: the role loses its permission, and the key must be
	// written again meanwhile.
	prefix := discovery.Prefix(discovery.DefaultNamespace, "greeter")
	if _, err := root.RoleRevokePermission(ctx, greeterSvc.User(), prefix, clientv3.GetPrefixRangeEnd(prefix)); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Delete(ctx, r.Key()); err != nil {
		t.Fatal(err)
	}
	if st := discoverytest.AwaitState(t, r, "refused", func(s register.State) bool {
		return refused(s) || s.Phase == register.Denied
	}); st.Phase == register.Denied {
		t.Fatalf("denied at once: %v", st.Err)
	}
	if err := access.Apply(ctx, root, greeterSvc, "secret-greeter"); err != nil {
		t.Fatal(err)
	}
	awaitRegistered(t, r, "after the role was granted again")
}

// A lease granted for a key etcd then refuses is revoked at once, not
// left in etcd for its TTL.
func TestRefusedWriteLeavesNoLease(t *testing.T) {
	_, root, asGreeter := startLoggedIn(t)
	// A service the greeter's role may not write.
	discoverytest.AwaitState(t, registerAs(t, asGreeter, "billing", "b1", 30*time.Second), "refused", refused)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	leases, err := root.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(leases.Leases) != 0 {
		t.Errorf("%d leases left in etcd after refused writes, want 0", len(leases.Leases))
	}
}

// startLoggedIn is startWithGreeterUser, with clients logged in as root
// and as the greeter's user.
func startLoggedIn(t *testing.T) (greeterSvc access.Service, root, asGreeter *clientv3.Client) {
	t.Helper()
	srv, greeterSvc := startWithGreeterUser(t)
	root, err := login(t, srv, "root", "secret-root")
	if err != nil {
		t.Fatal(err)
	}
	if asGreeter, err = login(t, srv, greeterSvc.User(), "secret-greeter"); err != nil {
		t.Fatal(err)
	}
	return greeterSvc, root, asGreeter
}
