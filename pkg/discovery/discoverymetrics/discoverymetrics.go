// Package discoverymetrics exports what discovery does as Prometheus
// metrics, labelled per service (never per instance or key, so their
// number stays bounded):
//
//	rollcall_discovery_registration_state{service,state}      registrations of this process in each state (registering, registered, retrying, denied)
//	rollcall_discovery_reregistrations_total{service}         keys written again after a loss (lease expired, key deleted, etcd wiped)
//	rollcall_discovery_resolver_updates_total{service}        lists the resolver published
//	rollcall_discovery_resolver_endpoints{service}            instances in the last list
//	rollcall_discovery_watch_restarts_total{service,reason}   resolver watches that ended and listed again
//	rollcall_discovery_etcd_errors_total{service,op}          etcd calls that failed (grant, put, keepalive, get; list, watch)
//
// It sees registrations and resolvers through their observer options, so
// the core packages never import Prometheus:
//
//	m, err := discoverymetrics.New(registry)
//	reg, err := register.New(etcd, inst, m.RegisterOption())
//	rb, err := resolve.NewBuilder(etcd, m.ResolveOption())
package discoverymetrics

import (
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/discovery/register"
	"github.com/rollcall/rollcall/pkg/discovery/resolve"
)

const namespace = "rollcall_discovery"

// Metrics is discovery's collectors; one per process, shared by every
// registration and resolver.
type Metrics struct {
	state           *prometheus.GaugeVec
	reregistrations *prometheus.CounterVec
	updates         *prometheus.CounterVec
	endpoints       *prometheus.GaugeVec
	restarts        *prometheus.CounterVec
	etcdErrors      *prometheus.CounterVec
	conflicts       *prometheus.CounterVec

	mu     sync.Mutex
	phases map[*register.Registration]register.Phase // of registrations not closed
}

// New registers discovery's collectors with reg.
func New(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		state: gauge("registration_state",
			"Registrations of this process in each state: registering, registered (key in etcd under a live lease), retrying (writing it again), denied (etcd refused the key for good), duplicate (another live process holds its instance ID).",
			"service", "state"),
		reregistrations: counter("reregistrations_total",
			"Times a registration's key was written again after it was lost (lease expired, key deleted, etcd wiped).",
			"service"),
		updates: counter("resolver_updates_total",
			"Instance lists the resolver published for a service (after each list and each watch response).",
			"service"),
		endpoints: gauge("resolver_endpoints",
			"Instances of a service in the resolver's last list.",
			"service"),
		restarts: counter("watch_restarts_total",
			"Resolver watches that ended and listed again, by reason: compacted, reconnected, resolve_now, closed, error.",
			"service", "reason"),
		etcdErrors: counter("etcd_errors_total",
			"etcd calls of discovery that failed, by operation: grant, put, keepalive, get (registration); list, watch (resolver).",
			"service", "op"),
		conflicts: counter("registration_conflicts_total",
			"Times another process wrote this process's registration key with another address: two processes share an instance ID.",
			"service"),
		phases: map[*register.Registration]register.Phase{},
	}
	for _, c := range []prometheus.Collector{m.state, m.reregistrations, m.updates, m.endpoints, m.restarts, m.etcdErrors, m.conflicts} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register discovery metrics: %w", err)
		}
	}
	return m, nil
}

func counter(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help}, labels)
}

func gauge(name, help string, labels ...string) *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help}, labels)
}

// RegisterOption makes a registration report to m.
func (m *Metrics) RegisterOption() register.Option { return register.WithObserver(registrations{m}) }

// ResolveOption makes a resolver Builder report to m.
func (m *Metrics) ResolveOption() resolve.Option { return resolve.WithObserver(resolvers{m}) }

// registrations is m as a register.Observer.
type registrations struct{ m *Metrics }

// phases that the state gauge shows; a closed registration leaves it.
var phases = []register.Phase{register.Registering, register.Registered, register.Retrying, register.Denied, register.Duplicate}

func (o registrations) RegistrationChanged(r *register.Registration, s register.State) {
	m, service := o.m, r.Instance().Service
	m.mu.Lock()
	defer m.mu.Unlock()
	if prev, known := m.phases[r]; known {
		m.state.WithLabelValues(service, prev.String()).Dec()
	} else {
		// Show every state of the service from the start, at 0 when no
		// registration is in it, so that queries need not handle absence.
		for _, p := range phases {
			m.state.WithLabelValues(service, p.String()).Add(0)
		}
		m.reregistrations.WithLabelValues(service).Add(0)
		m.conflicts.WithLabelValues(service).Add(0)
	}
	if s.Phase == register.Closed {
		delete(m.phases, r)
		return
	}
	m.phases[r] = s.Phase
	m.state.WithLabelValues(service, s.Phase.String()).Inc()
	if s.Phase == register.Registered && s.Writes > 1 {
		m.reregistrations.WithLabelValues(service).Inc()
	}
}

func (o registrations) RegistrationEtcdError(r *register.Registration, op string, _ error) {
	o.m.etcdErrors.WithLabelValues(r.Instance().Service, op).Inc()
}

func (o registrations) RegistrationConflict(r *register.Registration, _ discovery.Instance) {
	o.m.conflicts.WithLabelValues(r.Instance().Service).Inc()
}

// resolvers is m as a resolve.Observer.
type resolvers struct{ m *Metrics }

func (o resolvers) ResolverUpdated(service string, instances []discovery.Instance) {
	o.m.updates.WithLabelValues(service).Inc()
	o.m.endpoints.WithLabelValues(service).Set(float64(len(instances)))
}

func (o resolvers) WatchRestarted(service, reason string) {
	o.m.restarts.WithLabelValues(service, reason).Inc()
}

func (o resolvers) ResolverEtcdError(service, op string, _ error) {
	o.m.etcdErrors.WithLabelValues(service, op).Inc()
}
