package resolve_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/rollcall/rollcall/pkg/discovery"
)

// Follow hands over the lists a resolver would push: the registrations as
// they come and go, nothing while etcd is down, and again once it is back.
func TestFollowGetsTheResolversLists(t *testing.T) {
	srv, c, l := start(t)
	registerBackend(t, c, "greeter", "a")
	b := newBuilder(t, c, l)
	lists := make(chan []string, 100)
	stop, err := b.Follow("greeter", func(instances []discovery.Instance) {
		ids := make([]string, 0, len(instances))
		for _, inst := range instances {
			ids = append(ids, inst.ID)
		}
		lists <- ids
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	seen := false // a non-empty list was handed over
	awaitIDs := func(want ...string) {
		t.Helper()
		for got := range lists {
			if seen && len(got) == 0 {
				t.Fatalf("Follow handed an empty list, waiting for %v", want)
			}
			seen = seen || len(got) > 0
			if slices.Equal(got, want) {
				return
			}
		}
	}
	awaitIDs("a")
	registerBackend(t, c, "greeter", "b")
	awaitIDs("a", "b")

	srv.Stop()
	srv.Start()
	registerBackend(t, c, "greeter", "c")
	awaitIDs("a", "b", "c")
	assertNeverEmpty(t, l, "greeter")

	stop()
	stop() // a second stop is harmless
}

func TestFollowRejectsABadServiceName(t *testing.T) {
	_, c, l := start(t)
	if _, err := newBuilder(t, c, l).Follow("a/b", func([]discovery.Instance) {}); err == nil || !strings.Contains(err.Error(), `"a/b"`) {
		t.Errorf("Follow(%q) = %v, want an error naming it", "a/b", err)
	}
}
