package resolve_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rollcall/rollcall/pkg/discovery/discoverytest"
	"github.com/rollcall/rollcall/pkg/discovery/resolve"
	"github.com/rollcall/rollcall/pkg/etcdtest"
)

// countingHandler counts the records logged at warning or above.
type countingHandler struct {
	slog.Handler
	warnings *atomic.Int64
}

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.warnings.Add(1)
	}
	return nil
}

func (h countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countingHandler) WithGroup(string) slog.Handler      { return h }

// Values under a service's prefix are untrusted: thousands of garbage
// keys, oversize values and absurd metadata are skipped with a few log
// lines, and the valid instances among them are resolved and called.
func TestGarbageUnderThePrefixIsSkippedCheaply(t *testing.T) {
	srv := etcdtest.Start(t)
	c := srv.Client()
	ctx := context.Background()
	registerBackend(t, c, "greeter", "good")

	absurdLabels := make([]string, 1000)
	for i := range absurdLabels {
		absurdLabels[i] = fmt.Sprintf("%q:%q", fmt.Sprint("k", i), "v")
	}
	garbage := []string{
		"hello",
		`{"Op":0,"Addr":"0.0.0.0:0"}`,
		`{"Op":1,"Addr":"127.0.0.1:80"}`,
		`{"Op":0,"Addr":"127.0.0.1:80","Metadata":{"labels":{` + strings.Join(absurdLabels, ",") + `}}}`,
		`{"Op":0,"Addr":"127.0.0.1:80","Metadata":{"version":"` + strings.Repeat("v", 20000) + `"}}`,
		`{"Op":0,"Addr":"127.0.0.1:80","Metadata":{"weight":4000000000}}`, // would take every call
	}
	const keys = 3000 // many list pages
	for batch := 0; batch < keys; batch += 100 {
		var ops []clientv3.Op
		for i := batch; i < batch+100; i++ {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("rollcall/greeter/junk-%05d", i), garbage[i%len(garbage)]))
		}
		if _, err := c.Txn(ctx).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	for _, kv := range [][2]string{
		{"rollcall/greeter/" + strings.Repeat("k", 100<<10), `{"Op":0,"Addr":"127.0.0.1:80"}`}, // a 100 KiB key
		{"rollcall/greeter/bad id", `{"Op":0,"Addr":"127.0.0.1:80"}`},
		{"rollcall/greeter/huge-value", `{"Op":0,"Addr":"127.0.0.1:80","x":"` + strings.Repeat("x", 1<<20) + `"}`},
	} {
		if _, err := c.Put(ctx, kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}

	var warnings atomic.Int64
	l := discoverytest.NewLists()
	b := newBuilder(t, c, l, resolve.WithLogger(slog.New(countingHandler{slog.DiscardHandler, &warnings})))
	cc := dial(t, b, "greeter")
	l.Await(t, "greeter", "good")
	awaitOK(t, cc)

	// Garbage arriving through the watch changes nothing either, and a new
	// valid instance among it is picked up.
	for i := range 50 {
		if _, err := c.Put(ctx, fmt.Sprintf("rollcall/greeter/late-junk-%d", i), garbage[i%len(garbage)]); err != nil {
			t.Fatal(err)
		}
	}
	registerBackend(t, c, "greeter", "good2")
	l.Await(t, "greeter", "good", "good2")

	if n := warnings.Load(); n > 20 {
		t.Errorf("%d warnings logged for %d invalid values, want a few", n, keys+53)
	}
	for _, list := range l.History("greeter") {
		if len(list) > 2 {
			t.Fatalf("a list held garbage: %v", list)
		}
	}
}
