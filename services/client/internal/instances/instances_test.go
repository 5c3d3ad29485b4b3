package instances

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/services/client/internal/config"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func kinds(events []Event) []string {
	var out []string
	for _, e := range events {
		out = append(out, e.Kind+" "+e.Instance)
	}
	return out
}

func TestTrackerTellsWhatChangedInTheList(t *testing.T) {
	tr, err := New(config.Target{Service: "greeter"})
	if err != nil {
		t.Fatal(err)
	}
	a := discovery.Instance{Service: "greeter", ID: "a", Addr: "127.0.0.1:1"}
	b := discovery.Instance{Service: "greeter", ID: "b", Addr: "127.0.0.1:2"}
	steps := []struct {
		name   string
		apply  func()
		listed []string
		events []string
	}{
		{"first list", func() { tr.ResolverUpdated("greeter", []discovery.Instance{a, b}) },
			[]string{"a", "b"}, []string{"registered a", "registered b"}},
		{"same list again", func() { tr.ResolverUpdated("greeter", []discovery.Instance{a, b}) },
			[]string{"a", "b"}, nil},
		{"another service", func() { tr.ResolverUpdated("other", nil) },
			[]string{"a", "b"}, nil},
		{"b leaves", func() { tr.ResolverUpdated("greeter", []discovery.Instance{a}) },
			[]string{"a"}, []string{"deregistered b"}},
		{"etcd fails twice", func() {
			tr.ResolverEtcdError("greeter", "watch", errors.New("unavailable"))
			tr.ResolverEtcdError("greeter", "list", errors.New("unavailable"))
		}, []string{"a"}, []string{"etcd unreachable "}},
		{"b is back, a moved", func() {
			moved := a
			moved.Addr = "127.0.0.1:3"
			tr.ResolverUpdated("greeter", []discovery.Instance{moved, b})
		}, []string{"a", "b"}, []string{"etcd reachable ", "re-registered a", "re-registered b"}},
	}
	for _, s := range steps {
		s.apply()
		listed, events := tr.Take()
		var ids []string
		for _, in := range listed {
			ids = append(ids, in.ID)
			if in.State != Ready {
				t.Errorf("%s: %s is %s without Watch, want ready", s.name, in.ID, in.State)
			}
		}
		if got, want := ids, s.listed; !equal(got, want) {
			t.Errorf("%s: listed %v, want %v", s.name, got, want)
		}
		if got := kinds(events); !equal(got, s.events) {
			t.Errorf("%s: events %q, want %q", s.name, got, s.events)
		}
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// An instance listed but not answering (nothing listens at its address)
// is unreachable once its watch has tried it.
func TestAnInstanceNotAnsweringIsUnreachable(t *testing.T) {
	tr, err := New(config.Target{Service: "greeter"})
	if err != nil {
		t.Fatal(err)
	}
	tr.ResolverUpdated("greeter", []discovery.Instance{{Service: "greeter", ID: "a", Addr: "127.0.0.1:1"}})
	tr.sync(map[string]string{"a": "127.0.0.1:1"}) // what Watch does at each change
	defer tr.sync(nil)
	w := tr.watches["a"]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		listed, _ := tr.Take()
		if listed[0].State == Unreachable {
			return
		}
		if listed[0].State != Connecting {
			t.Fatalf("state %s, want connecting, then unreachable", listed[0].State)
		}
		if !w.conn.WaitForStateChange(ctx, w.conn.GetState()) {
			t.Fatalf("still %s after 30s", listed[0].State)
		}
	}
}

// Watch starts a watch per listed instance and stops them all when its
// context ends.
func TestWatchStopsItsWatches(t *testing.T) {
	tr, err := New(config.Target{Service: "greeter"})
	if err != nil {
		t.Fatal(err)
	}
	tr.ResolverUpdated("greeter", []discovery.Instance{{Service: "greeter", ID: "a", Addr: "127.0.0.1:1"}})
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // Watch syncs once, then returns: every watch it started is stopped (goleak checks)
	tr.Watch(ctx)
	if n := len(tr.watches); n != 0 {
		t.Errorf("%d watches left after Watch returned", n)
	}
}
