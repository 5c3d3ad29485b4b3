// Package balancemetrics exports what rollcall's balancing policies do
// with traffic as Prometheus metrics, labelled per service and zone
// (zone="local": instances in the client's zone, or with no zone, or every
// instance when the client has no zone; zone="other": the other zones),
// never per instance:
//
//   - rollcall_balance_calls_total{service,zone}: attempts sent to the
//     zone's instances (counted as they end);
//   - rollcall_balance_ejected_instances{service,zone}: instances ejected
//     now (outlier ejection);
//   - rollcall_balance_ejections_total{service,zone}: ejections so far;
//   - rollcall_balance_slow_start_instances{service,zone}: instances in
//     their slow-start window now;
//   - rollcall_balance_panic_mode{service}: connections in panic mode now;
//   - rollcall_balance_panics_total{service}: times a connection entered
//     panic mode.
//
// Every figure is read from the balancers when scraped, so picks pay
// nothing for them. Use it through pkg/telemetry, or:
//
//	m, err := balancemetrics.New(registry)
//	conn, err := call.Dial(rb, "greeter", call.WithBalanceObserver(m))
package balancemetrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rollcall/rollcall/pkg/balance"
)

// Metrics is a balance.Observer that keeps Prometheus metrics.
type Metrics struct {
	calls, ejected, ejections, starting, panic, panics *prometheus.Desc

	mu     sync.Mutex
	fleets map[*balance.Fleet]string // service of each running balancer
	closed map[string]totals         // counts of the service's closed balancers
}

// totals are the counters of closed balancers, kept so that counters
// never go down when gRPC replaces a balancer (idle mode).
type totals struct {
	calls, ejections balance.ByZone
	panics           int64
}

var _ balance.Observer = (*Metrics)(nil)

// New registers the metrics with reg.
func New(reg prometheus.Registerer) (*Metrics, error) {
	zoned := []string{"service", "zone"}
	m := &Metrics{
		calls: prometheus.NewDesc("rollcall_balance_calls_total",
			"Attempts sent to instances, counted as they end, by zone: local (the client's zone, or no zone) or other.", zoned, nil),
		ejected: prometheus.NewDesc("rollcall_balance_ejected_instances",
			"Instances ejected now by outlier ejection, by zone.", zoned, nil),
		ejections: prometheus.NewDesc("rollcall_balance_ejections_total",
			"Ejections of instances by outlier ejection, by zone.", zoned, nil),
		starting: prometheus.NewDesc("rollcall_balance_slow_start_instances",
			"Instances in their slow-start window now, by zone.", zoned, nil),
		panic: prometheus.NewDesc("rollcall_balance_panic_mode",
			"Connections in panic mode now: fewer healthy instances than the panic threshold, so calls go to all of them.", []string{"service"}, nil),
		panics: prometheus.NewDesc("rollcall_balance_panics_total",
			"Times a connection entered panic mode.", []string{"service"}, nil),
		fleets: map[*balance.Fleet]string{},
		closed: map[string]totals{},
	}
	if err := reg.Register(m); err != nil {
		return nil, err
	}
	return m, nil
}

// BalancerStarted keeps f to be read at scrape time.
func (m *Metrics) BalancerStarted(service string, f *balance.Fleet) {
	m.mu.Lock()
	m.fleets[f] = service
	m.mu.Unlock()
}

// BalancerClosed keeps f's counts and forgets f.
func (m *Metrics) BalancerClosed(service string, f *balance.Fleet) {
	s := f.Status()
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.fleets, f)
	t := m.closed[service]
	t.calls.Local += s.Calls.Local
	t.calls.Other += s.Calls.Other
	t.ejections.Local += s.Ejections.Local
	t.ejections.Other += s.Ejections.Other
	t.panics += s.Panics
	m.closed[service] = t
}

// Describe sends the metrics' descriptions.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.calls, m.ejected, m.ejections, m.starting, m.panic, m.panics} {
		ch <- d
	}
}

// Collect reads every running balancer, and adds the closed ones' counts.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	type sums struct {
		calls, ejected, ejections, starting balance.ByZone
		panic, panics                       int64
	}
	m.mu.Lock()
	fleets := make(map[*balance.Fleet]string, len(m.fleets))
	for f, service := range m.fleets {
		fleets[f] = service
	}
	bySvc := map[string]*sums{}
	for service, t := range m.closed {
		bySvc[service] = &sums{calls: t.calls, ejections: t.ejections, panics: t.panics}
	}
	m.mu.Unlock()
	for f, service := range fleets {
		st := f.Status() // outside m.mu: it takes the balancer's lock
		s := bySvc[service]
		if s == nil {
			s = &sums{}
			bySvc[service] = s
		}
		add := func(into *balance.ByZone, b balance.ByZone) { into.Local += b.Local; into.Other += b.Other }
		add(&s.calls, st.Calls)
		add(&s.ejected, st.Ejected)
		add(&s.ejections, st.Ejections)
		add(&s.starting, st.Starting)
		s.panics += st.Panics
		if st.Panic {
			s.panic++
		}
	}
	for service, s := range bySvc {
		for _, z := range []struct {
			desc *prometheus.Desc
			kind prometheus.ValueType
			v    balance.ByZone
		}{
			{m.calls, prometheus.CounterValue, s.calls},
			{m.ejected, prometheus.GaugeValue, s.ejected},
			{m.ejections, prometheus.CounterValue, s.ejections},
			{m.starting, prometheus.GaugeValue, s.starting},
		} {
			ch <- prometheus.MustNewConstMetric(z.desc, z.kind, float64(z.v.Local), service, "local")
			ch <- prometheus.MustNewConstMetric(z.desc, z.kind, float64(z.v.Other), service, "other")
		}
		ch <- prometheus.MustNewConstMetric(m.panic, prometheus.GaugeValue, float64(s.panic), service)
		ch <- prometheus.MustNewConstMetric(m.panics, prometheus.CounterValue, float64(s.panics), service)
	}
}
