package register_test

import (
	"context"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/discovery/discoverytest"
	"github.com/rollcall/rollcall/pkg/discovery/register"
	"github.com/rollcall/rollcall/pkg/etcdtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func instance(id, addr string) discovery.Instance {
	return discovery.Instance{Service: "greeter", ID: id, Addr: addr, Metadata: discovery.Metadata{Version: "v1", Weight: 2}}
}

// waitFor waits until the registration's state satisfies ok, or fails the
// test after 20 s.
func waitFor(t *testing.T, r *register.Registration, what string, ok func(register.State) bool) register.State {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		s, changed := r.Watch()
		if ok(s) {
			return s
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("registration never became %s; last state %+v", what, s)
		}
	}
}

func registered(s register.State) bool { return s.Phase == register.Registered }

// registeredAgain is true once the key was written again after a loss.
func registeredAgain(s register.State) bool { return s.Phase == register.Registered && s.Writes >= 2 }

func newRegistration(t *testing.T, c *clientv3.Client, inst discovery.Instance, opts ...register.Option) *register.Registration {
	t.Helper()
	r, err := register.New(c, inst, opts...)
	if err != nil {
		t.Fatalf("register.New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r.Close(ctx)
	})
	return r
}

func getKey(t *testing.T, c *clientv3.Client, key string) (value string, lease clientv3.LeaseID, found bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.Get(ctx, key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	if len(resp.Kvs) == 0 {
		return "", 0, false
	}
	return string(resp.Kvs[0].Value), clientv3.LeaseID(resp.Kvs[0].Lease), true
}

func TestRegisterWritesEndpointsCompatibleValue(t *testing.T) {
	srv := etcdtest.Start(t)
	c := srv.Client()
	r := newRegistration(t, c, instance("a", "127.0.0.1:7001"))
	s := waitFor(t, r, "registered", registered)

	if r.Key() != "rollcall/greeter/a" {
		t.Errorf("key = %q, want rollcall/greeter/a", r.Key())
	}
	value, lease, found := getKey(t, c, r.Key())
	if !found {
		t.Fatalf("key %s not in etcd", r.Key())
	}
	if lease != s.Lease {
		t.Errorf("key lease = %x, state lease = %x", lease, s.Lease)
	}
	// The format of etcd's naming/endpoints package.
	var rec struct {
		Op       int
		Addr     string
		Metadata map[string]any
	}
	if err := json.Unmarshal([]byte(value), &rec); err != nil {
		t.Fatalf("value %q is not JSON: %v", value, err)
	}
	if rec.Op != 0 || rec.Addr != "127.0.0.1:7001" || rec.Metadata["version"] != "v1" || rec.Metadata["weight"] != 2.0 {
		t.Errorf("value = %s, want Op 0, Addr 127.0.0.1:7001, version v1, weight 2", value)
	}
	ttl, err := c.TimeToLive(context.Background(), lease)
	if err != nil || ttl.GrantedTTL != 10 {
		t.Errorf("lease granted TTL = %v (err %v), want the default 10s", ttl.GrantedTTL, err)
	}
}

func TestCloseRevokesLeaseAndIsIdempotent(t *testing.T) {
	srv := etcdtest.Start(t)
	c := srv.Client()
	r := newRegistration(t, c, instance("a", "127.0.0.1:7001"))
	s := waitFor(t, r, "registered", registered)

	ctx := context.Background()
	if err := r.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, _, found := getKey(t, c, r.Key()); found {
		t.Errorf("key %s still in etcd after Close", r.Key())
	}
	ttl, err := c.TimeToLive(ctx, s.Lease)
	if err != nil || ttl.TTL != -1 {
		t.Errorf("lease after Close: TTL %d, err %v; want revoked (-1)", ttl.TTL, err)
	}
	if err := r.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if got := r.State().Phase; got != register.Closed {
		t.Errorf("phase after Close = %v, want closed", got)
	}
}

// Close with etcd down returns when its context ends, with an error
// naming the key, rather than waiting for etcd.
func TestCloseIsBoundedWhileEtcdIsDown(t *testing.T) {
	srv := etcdtest.Start(t)
	r := newRegistration(t, srv.Client(), instance("a", "127.0.0.1:7001"))
	waitFor(t, r, "registered", registered)
	srv.Stop()

	const bound = 500 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	start := time.Now()
	err := r.Close(ctx)
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), r.Key()) {
		t.Errorf("Close with etcd down = %v, want an error naming the key", err)
	}
	if ctx.Err() == nil {
		t.Errorf("Close returned before its context ended, yet failed: %v", err)
	}
	// etcd's client would wait for the server far longer (its dial and
	// request timeouts); a loaded machine may add a few seconds.
	if took > bound+5*time.Second {
		t.Errorf("Close took %v with a %v context; want it to return when the context ends", took, bound)
	}
}

// The registration must come back by itself after every way of losing it.
func TestRegistrationRecovers(t *testing.T) {
	tests := []struct {
		name string
		lose func(t *testing.T, srv *etcdtest.Server, c *clientv3.Client, r *register.Registration)
	}{
		{"key deleted by hand", func(t *testing.T, _ *etcdtest.Server, c *clientv3.Client, r *register.Registration) {
			if _, err := c.Delete(context.Background(), r.Key()); err != nil {
				t.Fatal(err)
			}
		}},
		{"lease revoked by hand", func(t *testing.T, _ *etcdtest.Server, c *clientv3.Client, r *register.Registration) {
			if _, err := c.Revoke(context.Background(), r.State().Lease); err != nil {
				t.Fatal(err)
			}
		}},
		{"etcd wiped and replaced by an empty one", func(t *testing.T, srv *etcdtest.Server, _ *clientv3.Client, _ *register.Registration) {
			srv.Wipe()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := etcdtest.Start(t)
			c := srv.Client()
			r := newRegistration(t, c, instance("a", "127.0.0.1:7001"))
			first := waitFor(t, r, "registered", registered)

			tt.lose(t, srv, c, r)
			s := waitFor(t, r, "registered again", registeredAgain)
			if s.Lease == first.Lease {
				t.Errorf("registered again under the lost lease %x", s.Lease)
			}
			if _, lease, found := getKey(t, c, r.Key()); !found || lease != s.Lease {
				t.Errorf("key after recovery: found %v, lease %x; want lease %x", found, lease, s.Lease)
			}
		})
	}
}

// Leases survive a restart on the same data, and renewals go on after
// it: the lease's time to live is seen to go up again (a dead keepalive
// would only let it run down), and the key never changes meanwhile.
func TestRegistrationSurvivesEtcdRestart(t *testing.T) {
	// The default TTL: a shorter one can run out while etcd stops, which
	// is a loss and a new write, not what this test is about.
	const ttl = register.DefaultTTL
	srv := etcdtest.Start(t)
	c := srv.Client()
	r := newRegistration(t, c, instance("a", "127.0.0.1:7001"))
	first := waitFor(t, r, "registered", registered)

	srv.Restart()
	ctx, cancel := context.WithTimeout(context.Background(), 3*ttl)
	defer cancel()
	resp, err := c.Get(ctx, r.Key())
	if err != nil || len(resp.Kvs) == 0 {
		t.Fatalf("key after restart: %v, %d kvs", err, len(resp.Kvs))
	}
	watch := c.Watch(ctx, r.Key(), clientv3.WithRev(resp.Header.Revision+1))
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	lowest := int64(math.MaxInt64)
	for renewed := false; !renewed; {
		select {
		case wresp := <-watch:
			for _, ev := range wresp.Events {
				t.Fatalf("key changed after restart: %v", ev.Type)
			}
		case <-tick.C:
			left, err := c.TimeToLive(ctx, first.Lease)
			if err != nil {
				t.Fatalf("lease %x after restart: %v", first.Lease, err)
			}
			if left.TTL <= 0 {
				t.Fatalf("lease %x expired after restart", first.Lease)
			}
			renewed = left.TTL > lowest
			lowest = min(lowest, left.TTL)
		case <-ctx.Done():
			t.Fatalf("lease %x not renewed within %v of the restart", first.Lease, 3*ttl)
		}
	}
	if s := r.State(); s.Phase != register.Registered || s.Writes != 1 {
		t.Errorf("state after restart = %+v, want registered with one write", s)
	}
}

func TestRegisterWhileEtcdIsDownRetriesUntilItAnswers(t *testing.T) {
	srv := etcdtest.Start(t)
	c := srv.Client()
	srv.Stop()
	r := newRegistration(t, c, instance("a", "127.0.0.1:7001"))
	s := waitFor(t, r, "retrying", func(s register.State) bool { return s.Phase == register.Retrying })
	if s.Err == nil {
		t.Errorf("retrying without an error")
	}
	srv.Start()
	waitFor(t, r, "registered", registered)
	if _, _, found := getKey(t, c, r.Key()); !found {
		t.Errorf("key %s not in etcd", r.Key())
	}
}

func TestNewRejectsBadInput(t *testing.T) {
	srv := etcdtest.Start(t)
	c := srv.Client()
	tests := []struct {
		name    string
		inst    discovery.Instance
		opts    []register.Option
		wantErr string
	}{
		{"empty service", discovery.Instance{Addr: "127.0.0.1:1"}, nil, `invalid service name ""`},
		{"slash in service", discovery.Instance{Service: "a/b", Addr: "127.0.0.1:1"}, nil, `invalid service name "a/b"`},
		{"no port", discovery.Instance{Service: "s", Addr: "127.0.0.1"}, nil, `invalid address "127.0.0.1"`},
		{"wildcard host", discovery.Instance{Service: "s", Addr: "0.0.0.0:80"}, nil, `invalid address "0.0.0.0:80"`},
		{"port zero", discovery.Instance{Service: "s", Addr: "127.0.0.1:0"}, nil, `invalid address "127.0.0.1:0"`},
		{"bad id", discovery.Instance{Service: "s", ID: "x/y", Addr: "127.0.0.1:1"}, nil, `invalid instance ID "x/y"`},
		{"short ttl", discovery.Instance{Service: "s", Addr: "127.0.0.1:1"}, []register.Option{register.WithTTL(time.Millisecond)}, "lease TTL 1ms"},
		{"bad namespace", discovery.Instance{Service: "s", Addr: "127.0.0.1:1"}, []register.Option{register.WithNamespace("/x/")}, `invalid namespace "/x/"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := register.New(c, tt.inst, tt.opts...)
			if err == nil {
				r.Close(context.Background())
				t.Fatalf("New(%+v) succeeded, want error containing %q", tt.inst, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("New error = %q, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestDefaultIDIsDerivedFromHostAndAddress(t *testing.T) {
	srv := etcdtest.Start(t)
	r := newRegistration(t, srv.Client(), discovery.Instance{Service: "greeter", Addr: "127.0.0.1:7001"})
	id := r.Instance().ID
	if id == "" || !strings.HasSuffix(id, "-127.0.0.1:7001") {
		t.Errorf("default ID = %q, want <host>-127.0.0.1:7001", id)
	}
	if err := discovery.ValidateID(id); err != nil {
		t.Error(err)
	}
}

// A second process started with the ID of a live one fails, naming the
// ID and both addresses; the first keeps its key.
func TestSecondProcessWithTheSameIDFailsAtStart(t *testing.T) {
	srv := etcdtest.Start(t)
	c := srv.Client()
	first := newRegistration(t, c, instance("a", "127.0.0.1:7001"), register.WithTTL(2*time.Second))
	held := waitFor(t, first, "registered", registered)

	second := newRegistration(t, srv.Client(), instance("a", "127.0.0.1:7002"), register.WithTTL(2*time.Second))
	s := waitFor(t, second, "duplicate", func(s register.State) bool { return s.Phase == register.Duplicate })
	for _, want := range []string{`"a"`, "127.0.0.1:7001", "127.0.0.1:7002"} {
		if s.Err == nil || !strings.Contains(s.Err.Error(), want) {
			t.Errorf("error %v does not name %s", s.Err, want)
		}
	}
	select {
	case <-second.Done():
	case <-time.After(5 * time.Second):
		t.Error("a duplicate registration did not stop")
	}
	if value, lease, _ := getKey(t, c, first.Key()); lease != held.Lease || !strings.Contains(value, "127.0.0.1:7001") {
		t.Errorf("key after the duplicate: %s under lease %x; want the first's, under %x", value, lease, held.Lease)
	}
	if leases, err := c.Leases(context.Background()); err != nil || len(leases.Leases) != 1 {
		t.Errorf("leases in etcd: %v (err %v); want only the first's (the duplicate revokes its own)", leases, err)
	}
}

// A process restarted on the same ID with another address, whose
// previous life left its key, registers: the old key's lease is no longer
// renewed.
func TestRestartWithANewAddressTakesOverTheLeftKey(t *testing.T) {
	srv := etcdtest.Start(t)
	c := srv.Client()
	ctx := context.Background()
	lease, err := c.Grant(ctx, 6)
	if err != nil {
		t.Fatal(err)
	}
	old, _ := discovery.Encode(instance("a", "127.0.0.1:7001"))
	if _, err := c.Put(ctx, "rollcall/greeter/a", string(old), clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	r := newRegistration(t, c, instance("a", "127.0.0.1:7002"), register.WithTTL(2*time.Second))
	s := waitFor(t, r, "registered", func(s register.State) bool { return s.Phase == register.Registered || s.Phase == register.Duplicate })
	if s.Phase != register.Registered {
		t.Fatalf("phase %v (err %v), want registered over a key nobody renews", s.Phase, s.Err)
	}
	if value, _, _ := getKey(t, c, r.Key()); !strings.Contains(value, "127.0.0.1:7002") {
		t.Errorf("key holds %s, want the new address", value)
	}
}

// conflicts counts RegistrationConflict calls.
type conflicts struct {
	register.Observer
	seen chan discovery.Instance
}

func (c conflicts) RegistrationChanged(*register.Registration, register.State)          {}
func (c conflicts) RegistrationEtcdError(*register.Registration, string, error)         {}
func (c conflicts) RegistrationConflict(_ *register.Registration, o discovery.Instance) { c.seen <- o }

// Another process that writes a registered instance's key later (same ID,
// another address) is noticed, counted and logged, and the instance
// writes its key again rather than vanish without a word.
func TestDisplacedRegistrationSaysSoAndWritesAgain(t *testing.T) {
	srv := etcdtest.Start(t)
	c := srv.Client()
	obs := conflicts{seen: make(chan discovery.Instance, 10)}
	r := newRegistration(t, c, instance("a", "127.0.0.1:7001"), register.WithObserver(obs))
	waitFor(t, r, "registered", registered)

	ctx := context.Background()
	other, err := c.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	value, _ := discovery.Encode(instance("a", "127.0.0.1:7002"))
	if _, err := c.Put(ctx, r.Key(), string(value), clientv3.WithLease(other.ID)); err != nil {
		t.Fatal(err)
	}
	select {
	case o := <-obs.seen:
		if o.Addr != "127.0.0.1:7002" {
			t.Errorf("conflict with %+v, want the other address", o)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the displacement was not reported")
	}
	s := waitFor(t, r, "registered again", registeredAgain)
	if value, lease, _ := getKey(t, c, r.Key()); lease != s.Lease || !strings.Contains(value, "127.0.0.1:7001") {
		t.Errorf("key %s under lease %x; want this instance's under %x", value, lease, s.Lease)
	}
}

// etcdErrors sends the op of each failed etcd call.
type etcdErrors struct {
	register.Observer
	ops chan string
}

func (e etcdErrors) RegistrationChanged(*register.Registration, register.State)      {}
func (e etcdErrors) RegistrationConflict(*register.Registration, discovery.Instance) {}
func (e etcdErrors) RegistrationEtcdError(_ *register.Registration, op string, _ error) {
	select {
	case e.ops <- op:
	default:
	}
}

// The etcd client's Watch blocks until etcd opens a watch stream: a key
// watch that starts while etcd is down must not hold up the renewals,
// whose failures are reported.
func TestRenewsWhileTheKeyWatchWaitsForEtcd(t *testing.T) {
	srv := etcdtest.Start(t)
	c := srv.Client()
	gate := discoverytest.GateWatches(c)
	obs := etcdErrors{ops: make(chan string, 100)}
	r := newRegistration(t, c, instance("a", "127.0.0.1:7001"), register.WithObserver(obs))
	select {
	case <-gate.Held():
	case <-time.After(20 * time.Second):
		t.Fatal("the registration never watched its key")
	}
	srv.Stop()
	gate.Open()
	timeout := time.After(30 * time.Second)
	for op := ""; op != "keepalive"; {
		select {
		case op = <-obs.ops:
		case <-timeout:
			t.Fatal("no failed lease renewal reported while etcd is down")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	r.Close(ctx)
}
