package access_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/rollcall/rollcall/pkg/call"
	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/discovery/access"
	"github.com/rollcall/rollcall/pkg/discovery/register"
	"github.com/rollcall/rollcall/pkg/discovery/resolve"
	"github.com/rollcall/rollcall/pkg/etcdtest"
	"github.com/rollcall/rollcall/pkg/flagenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, etcdtest.IgnoredGoroutines()...)
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

	if _, err := login(t, srv, greeterSvc.User(), "wrong-password"); err == nil {
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
			r, err := register.New(tc.as, inst, register.WithLogger(quiet))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close(ctx)
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
	reg, err := register.New(asGreeter, discovery.Instance{Service: "greeter", ID: "g1", Addr: "127.0.0.1:2"}, register.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close(ctx)
	lists := make(chan []discovery.Instance, 16)
	rb, err := resolve.NewBuilder(asClient, resolve.WithLogger(quiet), resolve.WithOnUpdate(func(_ string, l []discovery.Instance) {
		select {
		case lists <- l:
		default:
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := call.Dial(rb, "greeter")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Connect()
	for {
		select {
		case l := <-lists:
			for _, inst := range l {
				if inst.ID == "g1" {
					return
				}
			}
		case <-ctx.Done():
			t.Fatal("the caller never resolved the greeter it may read")
		}
	}
}

// awaitSettled waits until the registration is registered or denied.
func awaitSettled(t *testing.T, r *register.Registration) register.State {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		s, changed := r.Watch()
		if s.Phase == register.Registered || s.Phase == register.Denied {
			return s
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("registration neither registered nor denied; last state %+v", s)
		}
	}
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
	srv := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	greeterSvc := access.Service{Name: "greeter"}
	if err := access.Apply(ctx, srv.Client(), greeterSvc, "secret-greeter"); err != nil {
		t.Fatal(err)
	}
	if err := access.Enable(ctx, srv.Client(), "secret-root"); err != nil {
		t.Fatal(err)
	}
	return srv, greeterSvc
}

// A process with an etcd user that starts while etcd is down gets its
// client at once and registers when etcd comes back, as a process without
// auth does, instead of failing at start.
func TestAuthenticatedProcessStartsWhileEtcdIsDown(t *testing.T) {
	srv, greeterSvc := startWithGreeterUser(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv.Stop()

	c, err := login(t, srv, greeterSvc.User(), "secret-greeter")
	if err != nil {
		t.Fatalf("etcd client with a user while etcd is down: %v; want one that logs in later", err)
	}
	r, err := register.New(c, discovery.Instance{Service: "greeter", ID: "g1", Addr: "127.0.0.1:1"}, register.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	srv.Start()
	if st := awaitSettled(t, r); st.Phase != register.Registered {
		t.Fatalf("phase %v (err %v) once etcd is back, want registered", st.Phase, st.Err)
	}
}

// Operators edit a role by revoking and granting again: a registration
// refused meanwhile keeps trying and comes back, rather than giving up at
// the first refusal.
func TestRegistrationOutlivesARoleBeingEdited(t *testing.T) {
	srv, greeterSvc := startWithGreeterUser(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	root, asGreeter := loginRootAndGreeter(t, srv, greeterSvc)
	r, err := register.New(asGreeter, discovery.Instance{Service: "greeter", ID: "g1", Addr: "127.0.0.1:1"},
		register.WithLogger(quiet), register.WithTTL(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	if st := awaitSettled(t, r); st.Phase != register.Registered {
		t.Fatalf("phase %v (err %v), want registered", st.Phase, st.Err)
	}

	// The edit: the role loses its permission, and the key must be
	// written again meanwhile.
	prefix := discovery.Prefix(discovery.DefaultNamespace, "greeter")
	if _, err := root.RoleRevokePermission(ctx, greeterSvc.User(), prefix, clientv3.GetPrefixRangeEnd(prefix)); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Delete(ctx, r.Key()); err != nil {
		t.Fatal(err)
	}
	for st, changed := r.Watch(); st.Err == nil || !strings.Contains(st.Err.Error(), "permission denied"); st, changed = r.Watch() {
		if st.Phase == register.Denied {
			t.Fatalf("denied at once: %v", st.Err)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("the registration never saw the refusal; state %+v", st)
		}
	}
	if err := access.Apply(ctx, root, greeterSvc, "secret-greeter"); err != nil {
		t.Fatal(err)
	}
	if st := awaitSettled(t, r); st.Phase != register.Registered {
		t.Fatalf("phase %v (err %v) after the role was granted again, want registered", st.Phase, st.Err)
	}
}

// A lease granted for a key etcd then refuses is revoked at once, not
// left in etcd for its TTL.
func TestRefusedWriteLeavesNoLease(t *testing.T) {
	srv, greeterSvc := startWithGreeterUser(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	root, asGreeter := loginRootAndGreeter(t, srv, greeterSvc)
	// A service the greeter's role may not write.
	r, err := register.New(asGreeter, discovery.Instance{Service: "billing", ID: "b1", Addr: "127.0.0.1:1"},
		register.WithLogger(quiet), register.WithTTL(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	for st, changed := r.Watch(); st.Err == nil || !strings.Contains(st.Err.Error(), "permission denied"); st, changed = r.Watch() {
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("the registration never saw the refusal; state %+v", st)
		}
	}
	leases, err := root.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(leases.Leases) != 0 {
		t.Errorf("%d leases left in etcd after refused writes, want 0", len(leases.Leases))
	}
}

// loginRootAndGreeter connects as root and as the greeter's user of
// startWithGreeterUser.
func loginRootAndGreeter(t *testing.T, srv *etcdtest.Server, greeterSvc access.Service) (root, asGreeter *clientv3.Client) {
	t.Helper()
	root, err := login(t, srv, "root", "secret-root")
	if err != nil {
		t.Fatal(err)
	}
	if asGreeter, err = login(t, srv, greeterSvc.User(), "secret-greeter"); err != nil {
		t.Fatal(err)
	}
	return root, asGreeter
}
