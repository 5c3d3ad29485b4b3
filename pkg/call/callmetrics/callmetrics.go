// Package callmetrics exports what package call's attempts machinery does
// as Prometheus metrics, labelled per service (never per instance):
//
//   - rollcall_call_extra_attempts_total{service,kind}: attempts after a
//     call's first, by kind (retry, hedge, stall);
//   - rollcall_call_budget_denied_total{service,kind}: extra attempts the
//     retry budget refused;
//   - rollcall_call_retry_budget_available{service}: extra attempts the
//     budgets of the service's connections allow now, read at scrape.
//
// Use it through pkg/telemetry, or:
//
//	m, err := callmetrics.New(registry)
//	conn, err := call.Dial(rb, "greeter", call.WithObserver(m))
package callmetrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rollcall/rollcall/pkg/call"
)

// Metrics is a call.Observer that keeps Prometheus metrics.
type Metrics struct {
	extra  *prometheus.CounterVec
	denied *prometheus.CounterVec
	budget *prometheus.Desc

	mu      sync.Mutex
	budgets map[string][]call.Budget // per service, every connection dialed
}

var _ call.Observer = (*Metrics)(nil)

// New registers the metrics with reg.
func New(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		extra: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rollcall_call_extra_attempts_total",
			Help: "Attempts after a call's first, by kind: retry (after UNAVAILABLE), hedge, stall.",
		}, []string{"service", "kind"}),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rollcall_call_budget_denied_total",
			Help: "Extra attempts the retry budget refused, by kind.",
		}, []string{"service", "kind"}),
		budget: prometheus.NewDesc("rollcall_call_retry_budget_available",
			"Extra attempts the retry budgets of the service's connections allow now.", []string{"service"}, nil),
		budgets: map[string][]call.Budget{},
	}
	for _, c := range []prometheus.Collector{m.extra, m.denied, budgets{m}} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Dialed keeps budget to be read at scrape time.
func (m *Metrics) Dialed(service string, budget call.Budget) {
	m.mu.Lock()
	m.budgets[service] = append(m.budgets[service], budget)
	m.mu.Unlock()
}

// ExtraAttempt counts an extra attempt.
func (m *Metrics) ExtraAttempt(service, kind string) { m.extra.WithLabelValues(service, kind).Inc() }

// Denied counts a refusal.
func (m *Metrics) Denied(service, kind string) { m.denied.WithLabelValues(service, kind).Inc() }

// budgets is the budget gauge as a collector: read when scraped, so
// calls pay nothing for it.
type budgets struct{ m *Metrics }

func (b budgets) Describe(ch chan<- *prometheus.Desc) { ch <- b.m.budget }

func (b budgets) Collect(ch chan<- prometheus.Metric) {
	b.m.mu.Lock()
	defer b.m.mu.Unlock()
	for service, list := range b.m.budgets {
		total := 0.0
		for _, bud := range list {
			total += bud.Available()
		}
		ch <- prometheus.MustNewConstMetric(b.m.budget, prometheus.GaugeValue, total, service)
	}
}
