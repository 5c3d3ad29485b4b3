package main

import (
	"context"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/status"

	greeterv1 "github.com/rollcall/rollcall/api/greeter/v1"
)

// recorder counts every call with its status code, latency and the
// instance that served it.
type recorder struct {
	mu        sync.Mutex
	calls     int
	failed    int
	codes     map[string]int
	byID      map[string]int
	firstSeen map[string]time.Time
	latencies []time.Duration
	notify    map[string]chan time.Time // instance -> first call time
	after     []waiter
	// firstFail and lastFail are when the first and the last failed call
	// ended.
	firstFail, lastFail time.Time
	// timeline, when set, keeps every call (the scenarios that look at
	// windows of a run).
	timeline bool
	events   []callRecord
}

// callRecord is one call of a timeline.
type callRecord struct {
	start   time.Time
	latency time.Duration
	id      string // the instance that answered; "" for a failure
}

type waiter struct {
	id    string
	since time.Time
	ch    chan time.Time
}

func newRecorder() *recorder {
	return &recorder{codes: map[string]int{}, byID: map[string]int{}, firstSeen: map[string]time.Time{}, notify: map[string]chan time.Time{}}
}

func (r *recorder) record(id string, err error, latency time.Duration) {
	now := time.Now()
	started := now.Add(-latency)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	r.latencies = append(r.latencies, latency)
	if r.timeline {
		rec := callRecord{start: started, latency: latency}
		if err == nil {
			rec.id = id
		}
		r.events = append(r.events, rec)
	}
	if err != nil {
		if r.failed == 0 {
			r.firstFail = now
		}
		r.lastFail = now
		r.failed++
		r.codes[status.Code(err).String()]++
		return
	}
	r.codes["OK"]++
	r.byID[id]++
	for i, w := range r.after {
		if w.id == id && started.After(w.since) {
			w.ch <- now
			r.after = append(r.after[:i], r.after[i+1:]...)
			break
		}
	}
	if _, ok := r.firstSeen[id]; !ok {
		r.firstSeen[id] = now
		if ch, ok := r.notify[id]; ok {
			ch <- now
			delete(r.notify, id)
		}
	}
}

// add counts o's calls into r.
func (r *recorder) add(o *recorder) {
	o.mu.Lock()
	defer o.mu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls += o.calls
	r.failed += o.failed
	r.latencies = append(r.latencies, o.latencies...)
	for k, v := range o.codes {
		r.codes[k] += v
	}
	for k, v := range o.byID {
		r.byID[k] += v
	}
}

// firstCallAfter returns a channel that receives when id serves a call
// that started after t.
func (r *recorder) firstCallAfter(id string, t time.Time) <-chan time.Time {
	ch := make(chan time.Time, 1)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.after = append(r.after, waiter{id: id, since: t, ch: ch})
	return ch
}

// firstCall returns a channel that receives when id serves its first call.
func (r *recorder) firstCall(id string) <-chan time.Time {
	ch := make(chan time.Time, 1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if at, ok := r.firstSeen[id]; ok {
		ch <- at
	} else {
		r.notify[id] = ch
	}
	return ch
}

// window returns the calls of the timeline that started in [from, to).
func (r *recorder) window(from, to time.Time) []callRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []callRecord
	for _, c := range r.events {
		if !c.start.Before(from) && c.start.Before(to) {
			out = append(out, c)
		}
	}
	return out
}

// failures returns when the first and the last failed call ended (zero
// times if none failed).
func (r *recorder) failures() (first, last time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.firstFail, r.lastFail
}

// tally is what a recorder has counted so far.
type tally struct {
	calls, failed int
	codes         map[string]int // calls by status code
	byID          map[string]int // calls answered OK, by instance
	p99           time.Duration
}

func (r *recorder) snapshot() tally {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := tally{calls: r.calls, failed: r.failed, codes: maps.Clone(r.codes), byID: maps.Clone(r.byID)}
	lat := slices.Clone(r.latencies)
	slices.Sort(lat)
	if len(lat) > 0 {
		t.p99 = lat[(len(lat)*99)/100]
	}
	return t
}

// load runs closed-loop workers calling SayHello until stop.
type load struct {
	rec     *recorder
	started atomic.Int64 // calls begun, the ones cut by stop included
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	start   time.Time
	parts   []*load // startLoadPerWorker's
}

func startLoad(client greeterv1.GreeterServiceClient, workers int, deadline time.Duration) *load {
	return startLoadInto(newRecorder(), client, workers, deadline)
}

// startLoadInto is startLoad adding to an existing recorder.
func startLoadInto(rec *recorder, client greeterv1.GreeterServiceClient, workers int, deadline time.Duration) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{rec: rec, cancel: cancel, start: time.Now()}
	for range workers {
		l.wg.Go(func() {
			for ctx.Err() == nil {
				callCtx, cancelCall := context.WithTimeout(ctx, deadline)
				l.started.Add(1)
				start := time.Now()
				resp, err := client.SayHello(callCtx, &greeterv1.SayHelloRequest{Name: "bench"})
				cancelCall()
				if ctx.Err() != nil {
					return // stopping: the call was cut by us, not by the system
				}
				l.rec.record(resp.GetInstanceId(), err, time.Since(start))
			}
		})
	}
	return l
}

// startLoadPerWorker is startLoad with a recorder per worker, merged into
// the load's by stop: workers that share one recorder queue on its lock.
// Nothing is seen before stop.
func startLoadPerWorker(client greeterv1.GreeterServiceClient, workers int, deadline time.Duration) *load {
	l := &load{rec: newRecorder()}
	for range workers {
		part := startLoad(client, 1, deadline)
		l.parts = append(l.parts, part)
	}
	l.start = time.Now()
	return l
}

// stop ends the load and returns its duration.
func (l *load) stop() time.Duration {
	if l.parts != nil {
		for _, p := range l.parts {
			p.cancel()
		}
		for _, p := range l.parts {
			p.wg.Wait()
			l.rec.add(p.rec)
		}
		return time.Since(l.start)
	}
	l.cancel()
	l.wg.Wait()
	return time.Since(l.start)
}
