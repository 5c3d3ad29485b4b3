package serve

import (
	"context"
	"flag"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/discovery/register"
	"github.com/rollcall/rollcall/pkg/etcdtest"
)

// When serving fails (the listener breaks) while etcd is unreachable, Run
// still stops, in order and within its bounds, and says what failed.
func TestRunStopsWhenServingFailsAndEtcdIsDown(t *testing.T) {
	srv := etcdtest.Start(t)
	etcd := srv.Client()
	registered := make(chan struct{})
	s, err := New(Config{Listen: "127.0.0.1:0", Service: "greeter", ID: "g1", DrainDelay: 10 * time.Millisecond, StopTimeout: time.Second}, etcd,
		WithLogger(slog.New(slog.DiscardHandler)),
		WithRegisterOptions(register.WithObserver(onRegistered(sync.OnceFunc(func() { close(registered) })))))
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- s.Run(context.Background()) }()
	select {
	case <-registered:
	case <-time.After(30 * time.Second):
		t.Fatal("never registered")
	}
	srv.Stop()
	s.lis.Close() // Serve returns the listener's error
	select {
	case err := <-ran:
		if err == nil || !strings.Contains(err.Error(), "serve ") || strings.Contains(err.Error(), "%!") {
			t.Errorf("Run returned %v; want an error saying serving failed", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return in 30 s after serving failed with etcd down")
	}
}

// onRegistered is a register.Observer that calls f on the first
// registration.
type onRegistered func()

func (f onRegistered) RegistrationChanged(_ *register.Registration, st register.State) {
	if st.Phase == register.Registered && f != nil {
		f()
	}
}

func (onRegistered) RegistrationEtcdError(*register.Registration, string, error)     {}
func (onRegistered) RegistrationConflict(*register.Registration, discovery.Instance) {}

// A caller of New names only what it changes: zero fields get the
// defaults, and a negative drain delay means none.
func TestNewFillsDefaults(t *testing.T) {
	for _, tc := range []struct {
		drain, wantDrain time.Duration
	}{{0, DefaultDrainDelay}, {-1, 0}, {time.Millisecond, time.Millisecond}} {
		s, err := New(Config{Listen: "127.0.0.1:0", Service: "greeter", DrainDelay: tc.drain}, nil)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		want := Config{Listen: "127.0.0.1:0", Service: "greeter", Namespace: discovery.DefaultNamespace, TTL: register.DefaultTTL,
			DrainDelay: tc.wantDrain, StopTimeout: DefaultStopTimeout}
		if !reflect.DeepEqual(s.cfg, want) {
			t.Errorf("New(DrainDelay %v) config = %+v, want %+v", tc.drain, s.cfg, want)
		}
	}
}

// -drain-delay shows the default, and 0 there means no drain.
func TestDrainDelayFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want time.Duration
	}{{nil, DefaultDrainDelay}, {[]string{"-drain-delay", "0"}, 0}, {[]string{"-drain-delay", "250ms"}, 250 * time.Millisecond}} {
		var c Config
		fs := flag.NewFlagSet("greeter", flag.ContinueOnError)
		c.RegisterFlags(fs, map[string]string{})
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		if got := c.withDefaults().DrainDelay; got != tc.want {
			t.Errorf("%v: drain delay %v, want %v", tc.args, got, tc.want)
		}
	}
	var c Config
	fs := flag.NewFlagSet("greeter", flag.ContinueOnError)
	var help strings.Builder
	fs.SetOutput(&help)
	c.RegisterFlags(fs, map[string]string{})
	fs.PrintDefaults()
	if !strings.Contains(help.String(), "-drain-delay duration") || !strings.Contains(help.String(), "(0: not at all) (default 1s)") {
		t.Errorf("help of -drain-delay:\n%s", help.String())
	}
}
