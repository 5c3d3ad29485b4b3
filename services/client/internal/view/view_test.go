package view

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/rollcall/rollcall/services/client/internal/instances"
	"github.com/rollcall/rollcall/services/client/internal/stats"
)

// A snapshot has a row per instance listed or that answered calls: one
// that answered and left is gone, and the calls no instance answered have
// a row without a state.
func TestSnapshotJoinsFiguresWithTheList(t *testing.T) {
	rec := stats.NewRecorder()
	mark := rec.Mark()
	rec.Record("a", "OK", time.Millisecond)
	rec.Record("b", "OK", time.Millisecond)
	rec.Record("", "UNAVAILABLE", time.Millisecond)
	listed := []instances.Instance{{ID: "a", Addr: "127.0.0.1:1", State: instances.Stalled}, {ID: "c", Addr: "127.0.0.1:3", State: instances.Ready}}
	events := []instances.Event{{At: time.Now(), Kind: instances.Deregistered, Instance: "b"}}
	var buf bytes.Buffer
	if err := JSON(&buf, NewSnapshot(rec.Summary(), rec.Since(mark), listed, events)); err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(buf.Bytes(), []byte("\n")); n != 1 {
		t.Fatalf("%d lines, want one: %s", n, buf.Bytes())
	}
	var s Snapshot
	if err := json.Unmarshal(buf.Bytes(), &s); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"a": instances.Stalled, "b": Gone, "c": instances.Ready, stats.Unknown: ""}
	if len(s.Instances) != len(want) {
		t.Fatalf("rows %+v, want %v", s.Instances, want)
	}
	for _, f := range s.Instances {
		if state, ok := want[f.ID]; !ok || f.State != state {
			t.Errorf("%s: state %q, want %q", f.ID, f.State, state)
		}
		if answered := f.ID == "a" || f.ID == "b"; answered != (f.FirstCall != nil) {
			t.Errorf("%s: first call %v", f.ID, f.FirstCall)
		}
	}
	if s.Calls != 3 || s.Errors != 1 || len(s.Events) != 1 {
		t.Errorf("totals %d calls, %d errors, %d events; want 3, 1, 1", s.Calls, s.Errors, len(s.Events))
	}
}
