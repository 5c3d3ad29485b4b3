package serve

import (
	"context"
	"log/slog"
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
	s, err := New(Config{Listen: "127.0.0.1:0", Service: "greeter", ID: "g1", Namespace: discovery.DefaultNamespace,
		TTL: register.DefaultTTL, DrainDelay: 10 * time.Millisecond, StopTimeout: time.Second}, etcd, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	registered := make(chan struct{})
	s.AddRegisterOptions(register.WithObserver(onRegistered(sync.OnceFunc(func() { close(registered) }))))
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
