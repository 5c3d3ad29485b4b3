package stats_test

import (
	"encoding/json"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rollcall/rollcall/services/client/internal/stats"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// growth is the width of a latency bucket: a percentile is reported as
// the upper edge of the bucket holding it.
const growth = 1.04

// inBucket reports whether a reported percentile got is that of a true
// value trueMs: at or above it by at most one bucket (with float slack).
func inBucket(got, trueMs float64) bool {
	return got >= trueMs && got <= trueMs*growth*(1+1e-9)
}

func TestSummaryCountsEachInstanceSortedWithFailuresUnderNoInstance(t *testing.T) {
	r := stats.NewRecorder()
	for _, c := range []struct {
		instance, code string
	}{
		{"g2", "OK"}, {"g1", "OK"}, {"", "Unavailable"}, {"g2", "OK"},
		{"g2", "OK"}, {"", "DeadlineExceeded"}, {"", "Unavailable"}, {"g1", "ResourceExhausted"},
	} {
		r.Record(c.instance, c.code, time.Millisecond)
	}
	s := r.Summary()

	var rows []stats.Row
	for _, row := range s.Instances {
		rows = append(rows, stats.Row{Instance: row.Instance, Calls: row.Calls, Errors: row.Errors, Share: row.Share})
	}
	want := []stats.Row{
		{Instance: stats.Unknown, Calls: 3, Errors: 3, Share: 3.0 / 8},
		{Instance: "g1", Calls: 2, Errors: 1, Share: 2.0 / 8},
		{Instance: "g2", Calls: 3, Errors: 0, Share: 3.0 / 8},
	}
	if !slices.Equal(rows, want) {
		t.Errorf("rows (instance, calls, errors, share) = %+v\nwant %+v", rows, want)
	}
	if s.Calls != 8 || s.Errors != 4 {
		t.Errorf("totals: %d calls, %d errors; want 8, 4", s.Calls, s.Errors)
	}
	wantCodes := map[string]int{"OK": 4, "Unavailable": 2, "DeadlineExceeded": 1, "ResourceExhausted": 1}
	if !maps.Equal(s.Codes, wantCodes) {
		t.Errorf("codes = %v, want %v", s.Codes, wantCodes)
	}
	if s.PerSecond != float64(s.Calls)/s.Seconds {
		t.Errorf("calls per second %v, want calls / seconds = %v", s.PerSecond, float64(s.Calls)/s.Seconds)
	}
}

// Percentiles are exact to a bucket: never below the true value, at most
// one bucket (4%) above it.
func TestPercentilesAreTheTrueValueToWithinOneBucket(t *testing.T) {
	r := stats.NewRecorder()
	for ms := 1; ms <= 100; ms++ {
		r.Record("g1", "OK", time.Duration(ms)*time.Millisecond)
	}
	s := r.Summary()
	row := s.Instances[0]
	for _, p := range []struct {
		name   string
		got    float64
		trueMs float64
	}{
		{"row p50", row.P50Ms, 50},
		{"row p90", row.P90Ms, 90},
		{"row p99", row.P99Ms, 99},
		{"total p50", s.P50Ms, 50},
		{"total p99", s.P99Ms, 99},
	} {
		if !inBucket(p.got, p.trueMs) {
			t.Errorf("%s = %vms, want %vms to %vms", p.name, p.got, p.trueMs, p.trueMs*growth)
		}
	}
}

func TestTotalPercentilesCoverEveryInstance(t *testing.T) {
	r := stats.NewRecorder()
	for range 50 {
		r.Record("fast", "OK", time.Millisecond)
		r.Record("slow", "OK", 100*time.Millisecond)
	}
	s := r.Summary()
	if !inBucket(s.P50Ms, 1) {
		t.Errorf("total p50 = %vms, want the fast instance's 1ms", s.P50Ms)
	}
	if !inBucket(s.P99Ms, 100) {
		t.Errorf("total p99 = %vms, want the slow instance's 100ms", s.P99Ms)
	}
}

// A failed call's latency is how long the failure took, not an answer's:
// it must not move the percentiles.
func TestFailedCallsDoNotCountInPercentiles(t *testing.T) {
	r := stats.NewRecorder()
	for range 10 {
		r.Record("g1", "OK", time.Millisecond)
		r.Record("g1", "DeadlineExceeded", time.Second)
		r.Record("", "Unavailable", time.Second)
	}
	s := r.Summary()
	if !inBucket(s.P99Ms, 1) {
		t.Errorf("total p99 = %vms, want the answers' 1ms", s.P99Ms)
	}
	for _, row := range s.Instances {
		switch {
		case row.Instance == "g1" && !inBucket(row.P99Ms, 1):
			t.Errorf("g1: p99 = %vms, want its answers' 1ms", row.P99Ms)
		case row.Instance == stats.Unknown && row.P50Ms+row.P90Ms+row.P99Ms != 0:
			t.Errorf("%s: percentiles %v/%v/%vms, want none (0) without answers", row.Instance, row.P50Ms, row.P90Ms, row.P99Ms)
		}
	}
}

// Latencies outside 1µs..about 10 minutes land in the end buckets: the
// memory stays fixed and nothing is lost.
func TestLatencyOutOfRangeCountsInTheEndBuckets(t *testing.T) {
	tests := []struct {
		latency      time.Duration
		minMs, maxMs float64
	}{
		{0, 0.001, 0.0011},
		{-time.Second, 0.001, 0.0011},
		{time.Hour, 5 * 60 * 1000, 10 * 60 * 1000},
	}
	for _, tt := range tests {
		r := stats.NewRecorder()
		r.Record("g1", "OK", tt.latency)
		s := r.Summary()
		if s.Calls != 1 || s.P99Ms < tt.minMs || s.P99Ms > tt.maxMs {
			t.Errorf("latency %v: %d calls, p99 %vms; want 1 call, p99 %v to %vms", tt.latency, s.Calls, s.P99Ms, tt.minMs, tt.maxMs)
		}
	}
}

// The load mode prints the summary as JSON, which deployments' tests and
// scripts read by these names; an empty run must encode too (no NaN).
func TestSummaryJSONHasTheDocumentedFields(t *testing.T) {
	tests := []struct {
		name   string
		record func(*stats.Recorder)
	}{
		{"no calls", func(*stats.Recorder) {}},
		{"only failures", func(r *stats.Recorder) { r.Record("", "Unavailable", time.Millisecond) }},
		{"answers", func(r *stats.Recorder) { r.Record("g1", "OK", time.Millisecond) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := stats.NewRecorder()
			tt.record(r)
			b, err := json.Marshal(r.Summary())
			if err != nil {
				t.Fatalf("encode summary: %v", err)
			}
			var got map[string]json.RawMessage
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			wantKeys := []string{"calls", "calls_per_second", "codes", "errors", "instances", "p50_ms", "p99_ms", "seconds"}
			if keys := slices.Sorted(maps.Keys(got)); !slices.Equal(keys, wantKeys) {
				t.Errorf("summary keys %v, want %v", keys, wantKeys)
			}
			var rows []map[string]json.RawMessage
			if err := json.Unmarshal(got["instances"], &rows); err != nil {
				t.Fatalf("instances %s: %v", got["instances"], err)
			}
			wantRowKeys := []string{"calls", "errors", "instance", "p50_ms", "p90_ms", "p99_ms", "share"}
			for _, row := range rows {
				if keys := slices.Sorted(maps.Keys(row)); !slices.Equal(keys, wantRowKeys) {
					t.Errorf("instance keys %v, want %v", keys, wantRowKeys)
				}
			}
		})
	}
}

func TestRecordFromManyGoroutinesLosesNoCall(t *testing.T) {
	const workers, each = 8, 500
	r := stats.NewRecorder()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				if i%10 == 0 {
					r.Record("", "Unavailable", time.Millisecond)
					continue
				}
				r.Record([]string{"g1", "g2"}[w%2], "OK", time.Millisecond)
				_ = r.Summary() // readers run while the workers record
			}
		})
	}
	wg.Wait()
	s := r.Summary()
	if s.Calls != workers*each || s.Errors != workers*each/10 || s.Codes["OK"] != workers*each*9/10 {
		t.Errorf("%d calls, %d errors, codes %v; want %d calls, %d errors", s.Calls, s.Errors, s.Codes, workers*each, workers*each/10)
	}
}
