// Package stats counts calls per serving instance: calls, errors, share
// and latency percentiles, with bounded memory however long it runs.
package stats

import (
	"math"
	"slices"
	"strings"
	"sync"
	"time"
)

// Unknown is the row of calls that failed before an instance answered.
const Unknown = "(no instance)"

// Recorder is safe for concurrent use.
type Recorder struct {
	mu    sync.Mutex
	start time.Time
	rows  map[string]*counter
	codes map[string]int
}

type counter struct {
	calls, errors int
	first         time.Time // of the first call the instance answered
	hist          histogram
}

// NewRecorder starts counting now.
func NewRecorder() *Recorder {
	return &Recorder{start: time.Now(), rows: map[string]*counter{}, codes: map[string]int{}}
}

// Record counts one call served by instance ("" if none answered); code is
// "OK" or the gRPC status code's name.
func (r *Recorder) Record(instance, code string, latency time.Duration) {
	if instance == "" {
		instance = Unknown
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.rows[instance]
	if !ok {
		c = &counter{}
		r.rows[instance] = c
	}
	c.calls++
	r.codes[code]++
	if code != "OK" {
		c.errors++
		return
	}
	if c.first.IsZero() {
		c.first = time.Now()
	}
	c.hist.add(latency)
}

// Row is one instance's figures.
type Row struct {
	Instance string  `json:"instance"`
	Calls    int     `json:"calls"`
	Errors   int     `json:"errors"`
	Share    float64 `json:"share"` // of all calls, 0..1
	P50Ms    float64 `json:"p50_ms"`
	P90Ms    float64 `json:"p90_ms"`
	P99Ms    float64 `json:"p99_ms"`
	// First is when the instance answered its first call (zero if none).
	First time.Time `json:"-"`
}

// Summary is every row, sorted by instance, and the totals.
type Summary struct {
	Elapsed   time.Duration  `json:"-"`
	Seconds   float64        `json:"seconds"`
	Calls     int            `json:"calls"`
	Errors    int            `json:"errors"`
	PerSecond float64        `json:"calls_per_second"`
	P50Ms     float64        `json:"p50_ms"`
	P99Ms     float64        `json:"p99_ms"`
	Codes     map[string]int `json:"codes"`
	Instances []Row          `json:"instances"`
}

// Summary returns the figures so far.
func (r *Recorder) Summary() Summary {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := summarize(time.Since(r.start), r.rows, nil)
	for code, n := range r.codes {
		s.Codes[code] = n
	}
	return s
}

// Mark is a recorder's counts at one instant.
type Mark struct {
	at   time.Time
	rows map[string]counter
}

// Mark returns the counts now, for Since.
func (r *Recorder) Mark() Mark {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := Mark{at: time.Now(), rows: make(map[string]counter, len(r.rows))}
	for name, c := range r.rows {
		m.rows[name] = *c
	}
	return m
}

// Since returns the figures of the calls recorded after m (a recent
// window, for a live view): rates and percentiles over that time only,
// without status codes. Instances with no call in it have no row.
func (r *Recorder) Since(m Mark) Summary {
	r.mu.Lock()
	defer r.mu.Unlock()
	return summarize(time.Since(m.at), r.rows, m.rows)
}

// summarize computes the figures of rows less before (nil: nothing
// before) over elapsed; the caller holds the recorder's lock.
func summarize(elapsed time.Duration, rows map[string]*counter, before map[string]counter) Summary {
	s := Summary{Elapsed: elapsed, Seconds: elapsed.Seconds(), Codes: map[string]int{}}
	window := make(map[string]*counter, len(rows))
	for name, c := range rows {
		d := *c
		if b, ok := before[name]; ok {
			d.calls -= b.calls
			d.errors -= b.errors
			d.hist.subtract(&b.hist)
		}
		if d.calls > 0 || before == nil {
			window[name] = &d
		}
	}
	var all histogram
	for _, c := range window {
		s.Calls += c.calls
		s.Errors += c.errors
		all.merge(&c.hist)
	}
	for name, c := range window {
		row := Row{Instance: name, Calls: c.calls, Errors: c.errors, First: c.first,
			P50Ms: c.hist.quantileMs(0.5), P90Ms: c.hist.quantileMs(0.9), P99Ms: c.hist.quantileMs(0.99)}
		if s.Calls > 0 {
			row.Share = float64(c.calls) / float64(s.Calls)
		}
		s.Instances = append(s.Instances, row)
	}
	slices.SortFunc(s.Instances, func(a, b Row) int { return strings.Compare(a.Instance, b.Instance) })
	if s.Seconds > 0 {
		s.PerSecond = float64(s.Calls) / s.Seconds
	}
	s.P50Ms, s.P99Ms = all.quantileMs(0.5), all.quantileMs(0.99)
	return s
}

// histogram buckets latencies on a log scale (about 4% wide) from 1 µs to
// about 10 minutes: fixed memory, percentiles within a bucket.
type histogram struct {
	counts [512]uint64
	total  uint64
}

const growth = 1.04

func (h *histogram) add(d time.Duration) {
	us := max(float64(d)/float64(time.Microsecond), 1)
	i := min(int(math.Log(us)/math.Log(growth)), len(h.counts)-1)
	h.counts[i]++
	h.total++
}

func (h *histogram) merge(o *histogram) {
	for i, n := range o.counts {
		h.counts[i] += n
	}
	h.total += o.total
}

// subtract removes o, an earlier state of h, leaving what came after it.
func (h *histogram) subtract(o *histogram) {
	for i, n := range o.counts {
		h.counts[i] -= n
	}
	h.total -= o.total
}

// quantileMs returns the upper edge of the bucket holding quantile q.
func (h *histogram) quantileMs(q float64) float64 {
	if h.total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.total)))
	var seen uint64
	for i, n := range h.counts {
		seen += n
		if seen >= rank {
			return math.Pow(growth, float64(i+1)) / 1000
		}
	}
	return math.Pow(growth, float64(len(h.counts))) / 1000
}
