package resolve_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rollcall/rollcall/pkg/discovery/discoverytest"
	"github.com/rollcall/rollcall/pkg/discovery/resolve"
	"github.com/rollcall/rollcall/pkg/etcdtest"
)

// A process that starts while etcd is down calls the instances of the
// last list it saved, and follows etcd's list once etcd answers.
func TestClientStartedWhileEtcdIsDownStartsFromTheSnapshot(t *testing.T) {
	srv, c, before := start(t)
	dir := t.TempDir()
	for _, id := range []string{"a", "b"} {
		registerBackend(t, c, "greeter", id)
	}
	cc := dial(t, newBuilder(t, c, before, resolve.WithSnapshots(dir, 0)), "greeter")
	awaitSpread(t, cc, "a", "b")
	cc.Close()

	srv.Stop()
	// A new process: its own client and resolver, etcd unreachable.
	l := discoverytest.NewLists()
	dialAndAwait(t, newBuilder(t, srv.Client(), l, resolve.WithSnapshots(dir, 0)), l, "a", "b")

	srv.Start()
	registerBackend(t, srv.Client(), "greeter", "c")
	l.Await(t, "greeter", "a", "b", "c")
}

// A snapshot older than its limit, or one that does not parse, is not
// used: the resolver waits for etcd and says why.
func TestUnusableSnapshotIsIgnored(t *testing.T) {
	tests := []struct {
		name  string
		spoil func(t *testing.T, file string)
	}{
		{"too old", func(t *testing.T, file string) {
			var f map[string]any
			data, err := os.ReadFile(file)
			if err == nil {
				err = json.Unmarshal(data, &f)
			}
			if err != nil {
				t.Fatal(err)
			}
			f["written"] = time.Now().Add(-resolve.DefaultSnapshotMaxAge - time.Minute)
			if data, err = json.Marshal(f); err == nil {
				err = os.WriteFile(file, data, 0o644)
			}
			if err != nil {
				t.Fatal(err)
			}
		}},
		{"garbage", func(t *testing.T, file string) {
			if err := os.WriteFile(file, []byte("{not json"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := etcdtest.Start(t)
			dir := t.TempDir()
			registerBackend(t, srv.Client(), "greeter", "a")
			first := discoverytest.NewLists()
			cc := dial(t, newBuilder(t, srv.Client(), first, resolve.WithSnapshots(dir, 0)), "greeter")
			awaitSpread(t, cc, "a")
			cc.Close()
			files, _ := filepath.Glob(filepath.Join(dir, "*", "greeter.json"))
			if len(files) != 1 {
				t.Fatalf("snapshot files %v, want one", files)
			}
			tt.spoil(t, files[0])

			srv.Stop()
			l := discoverytest.NewLists()
			late := dial(t, newBuilder(t, srv.Client(), l, resolve.WithSnapshots(dir, 0)), "greeter")
			if id, err := call(t.Context(), late); err == nil {
				t.Errorf("call with etcd down and an unusable snapshot reached %s, want a failure", id)
			}
			if got := l.History("greeter"); len(got) != 0 {
				t.Errorf("lists published from an unusable snapshot: %v", got)
			}
			srv.Start()
			l.Await(t, "greeter", "a")
		})
	}
}
