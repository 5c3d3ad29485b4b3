package stats

import (
	"testing"
	"time"
)

// Since counts only the calls recorded after the mark: a live view's
// window, where an instance that stopped answering has no row.
func TestSinceCountsTheCallsAfterTheMark(t *testing.T) {
	r := NewRecorder()
	for range 10 {
		r.Record("a", "OK", 100*time.Millisecond)
	}
	r.Record("b", "OK", time.Millisecond)
	m := r.Mark()
	for range 4 {
		r.Record("b", "OK", 2*time.Millisecond)
	}
	r.Record("", "UNAVAILABLE", time.Millisecond)

	s := r.Since(m)
	if s.Calls != 5 || s.Errors != 1 {
		t.Fatalf("since the mark: %d calls, %d errors; want 5, 1", s.Calls, s.Errors)
	}
	if len(s.Instances) != 2 || s.Instances[0].Instance != Unknown || s.Instances[1].Instance != "b" {
		t.Fatalf("rows %+v, want (no instance) and b only", s.Instances)
	}
	b := s.Instances[1]
	if b.Calls != 4 || b.Share != 0.8 {
		t.Errorf("b: %d calls, share %v; want 4, 0.8", b.Calls, b.Share)
	}
	if b.P99Ms < 1.9 || b.P99Ms > 2.2 {
		t.Errorf("b's p99 %vms over the window, want about 2ms (its 1ms call came before the mark)", b.P99Ms)
	}
	if b.First.IsZero() {
		t.Error("b's first answer has no time")
	}
	if total := r.Summary(); total.Calls != 16 || len(total.Instances) != 3 {
		t.Errorf("summary: %d calls in %d rows, want 16 in 3", total.Calls, len(total.Instances))
	}
}
