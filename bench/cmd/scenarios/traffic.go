package main

import (
	"context"
	"fmt"
	"slices"
	"syscall"
	"time"
)

// The traffic-management scenarios: zone-aware routing, outlier ejection
// and panic mode, slow start.

// inZones is one fast instance per zone given, registered in it.
func inZones(zones ...string) [][]string {
	var flags [][]string
	for _, z := range zones {
		flags = append(flags, append(fast[:len(fast):len(fast)], "-zone", z))
	}
	return flags
}

// internal answers INTERNAL to every call: a bad deploy.
func internal(base []string) []string {
	return append(base[:len(base):len(base)], "-fail-rate", "1", "-fail-code", "INTERNAL")
}

// inZone returns the instances of e registered in the client's zone (in
// is true) or in others.
func (e *env) inZone(in bool) []string {
	var ids []string
	for _, id := range e.order {
		if (e.zones[id] == e.zone) == in {
			ids = append(ids, id)
		}
	}
	return ids
}

// runZone runs the load over instances in two zones, the client in one:
// the share of the calls answered in the client's zone, and the share a
// fair split gives it (Envoy's rule, callers spread evenly over the
// zones: each zone's callers keep in it its share of the instances over
// its share of the callers, at most all).
func runZone(ctx context.Context, e *env, t timing, r *result) error {
	l := startLoad(e.client, 32, time.Second)
	time.Sleep(t.warm + t.after)
	r.fill(l.rec, l.stop())
	got := l.rec.snapshot()
	local := e.inZone(true)
	served := 0
	for _, id := range local {
		served += got.byID[id]
	}
	r.metric("local_share", float64(served)/float64(max(got.codes["OK"], 1)))
	zones := map[string]bool{}
	for _, id := range e.order {
		zones[e.zones[id]] = true
	}
	r.metric("fair_share", min(float64(len(local))/float64(len(e.order))*float64(len(zones)), 1))
	return nil
}

// runZoneDown kills every instance of the client's zone at once under
// load: the failed calls, and how soon the other zone answers.
func runZoneDown(ctx context.Context, e *env, t timing, r *result) error {
	l := startLoad(e.client, 32, time.Second)
	time.Sleep(t.warm)
	down, up := e.inZone(true), e.inZone(false)
	killed := time.Now()
	var firsts []<-chan time.Time
	for _, id := range up {
		firsts = append(firsts, l.rec.firstCallAfter(id, killed))
	}
	for _, id := range down {
		e.greeters[id].Signal(syscall.SIGKILL)
	}
	for _, id := range down {
		e.stopGreeter(id, syscall.SIGKILL) // waits for the exit
	}
	first := time.Duration(-1)
	deadline := time.After(10 * time.Second)
	for _, ch := range firsts {
		select {
		case at := <-ch:
			if d := at.Sub(killed); first < 0 || d < first {
				first = d
			}
		case <-deadline:
		}
	}
	time.Sleep(t.after)
	r.fill(l.rec, l.stop())
	r.metric("zone_b_after_ms", ms(first))
	return nil
}

// runBadDeploy adds, under load, an instance that answers INTERNAL to
// every call: how long calls fail, and how many.
func runBadDeploy(ctx context.Context, e *env, t timing, r *result) error {
	l := startLoad(e.client, 32, time.Second)
	time.Sleep(t.warm)
	_, err := e.startGreeter(internal(fast)...)
	time.Sleep(t.after)
	r.fill(l.rec, l.stop())
	if first, last := l.rec.failures(); !first.IsZero() {
		r.metric("failing_ms", ms(last.Sub(first)))
	}
	r.metric("ejections", float64(e.obs.Status().Ejections.Local))
	return err
}

// runPanic runs the load over three instances, two of which answer
// INTERNAL to every call: whether the policy entered panic mode, and each
// instance's share of the calls the servers started.
func runPanic(ctx context.Context, e *env, t timing, r *result) error {
	before := map[string]int{}
	for _, id := range e.order {
		n, err := e.servedBy(id, "started")
		if err != nil {
			return err
		}
		before[id] = n
	}
	l := startLoad(e.client, 32, time.Second)
	time.Sleep(t.warm + t.after)
	r.fill(l.rec, l.stop())
	var counts []int
	for _, id := range e.order {
		n, err := e.servedBy(id, "started")
		if err != nil {
			return err
		}
		counts = append(counts, n-before[id])
	}
	total := 0
	for _, n := range counts {
		total += n
	}
	top := 0.0
	for i, id := range e.order {
		share := float64(counts[i]) / float64(max(total, 1))
		r.metric("share_"+id, share)
		top = max(top, share)
	}
	r.metric("max_share", top)
	s := e.obs.Status()
	r.metric("panics", float64(s.Panics))
	r.metric("panic_at_end", 0)
	if s.Panic {
		r.metric("panic_at_end", 1)
	}
	return nil
}

// slowStartWindow is rollcall's default slow-start window, which the
// slow-start scenario measures against.
const slowStartWindow = 10 * time.Second

// runSlowStart adds, under load, an instance whose first 200 calls take
// ten times longer: the p99 of the calls of the 5 s after it joined
// against the 5 s before, and its share at the end of the slow-start
// window.
func runSlowStart(ctx context.Context, e *env, t timing, r *result) error {
	rec := newRecorder()
	rec.timeline = true
	l := startLoadInto(rec, e.client, 32, time.Second)
	time.Sleep(t.warm + 5*time.Second)
	started := time.Now()
	id, err := e.startGreeter(append(fast[:len(fast):len(fast)], "-warmup-calls", "200")...)
	if err != nil {
		l.stop()
		return err
	}
	joined, err := e.awaitKeys(ctx, []string{id}, 30*time.Second)
	if err != nil {
		l.stop()
		return err
	}
	time.Sleep(time.Until(joined.Add(slowStartWindow + time.Second)))
	r.fill(rec, l.stop())
	p99 := func(calls []callRecord) time.Duration {
		lat := make([]time.Duration, len(calls))
		for i, c := range calls {
			lat[i] = c.latency
		}
		slices.Sort(lat)
		if len(lat) == 0 {
			return 0
		}
		return lat[len(lat)*99/100]
	}
	share := func(calls []callRecord) (float64, int) {
		n := 0
		for _, c := range calls {
			if c.id == id {
				n++
			}
		}
		return float64(n) / float64(max(len(calls), 1)), n
	}
	before := p99(rec.window(started.Add(-5*time.Second), started))
	firstCalls := rec.window(joined, joined.Add(5*time.Second))
	after := p99(firstCalls)
	_, cold := share(firstCalls)
	end, _ := share(rec.window(joined.Add(slowStartWindow-time.Second), joined.Add(slowStartWindow)))
	r.metric("p99_before_ms", ms(before))
	r.metric("p99_after_ms", ms(after))
	r.metric("p99_ratio", float64(after)/float64(max(before, 1)))
	r.metric("new_calls_first_5s", float64(cold))
	r.metric("new_share_at_end", end)
	if before == 0 || after == 0 {
		return fmt.Errorf("no calls in a window (before %v, after %v)", before, after)
	}
	return nil
}
