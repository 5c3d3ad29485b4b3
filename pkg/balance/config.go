package balance

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"google.golang.org/grpc/serviceconfig"
)

// P2CConfig is rollcall_p2c_ewma's configuration, its JSON fields in the
// service config:
//
//	{"loadBalancingConfig":[{"rollcall_p2c_ewma":{"slowFactor":2,"stuckFactor":4,"failurePenalty":"1s","exploreShare":0.005,"vanishGrace":"30s",
//	  "zone":"eu-west-1a","slowStartWindow":"10s","outlierEjection":{"consecutiveFailures":5}}}]}
//
// A field left out takes its default; Traffic's fields sit beside the
// policy's own.
type P2CConfig struct {
	serviceconfig.LoadBalancingConfig `json:"-"`
	Traffic

	// SlowFactor: of the two instances drawn, the first loses to the
	// second when its latency estimate is more than SlowFactor times the
	// second's.
	// Closer than that, they count as equal and the registered weights
	// decide. Default 2; 1 to 1000.
	SlowFactor float64 `json:"slowFactor"`
	// StuckFactor: an instance with calls in flight and no answer for
	// StuckFactor times its latency estimate (at least minStuck) is
	// stuck, and loses to one that is not, whatever its estimate: calls
	// pile up on an instance whose answers stopped coming (a deadlocked
	// handler, a cold instance) before any of them ends to raise it.
	// Default 4; 1 to 100.
	StuckFactor float64 `json:"stuckFactor"`
	// FailurePenalty is the latency a failure of the instance counts as
	// (UNAVAILABLE, RESOURCE_EXHAUSTED, running out of time on its own, a
	// stall), when it took less. Default 1s; 1ms to 1m.
	FailurePenalty Duration `json:"failurePenalty"`
	// ExploreShare is the share of picks that skip the comparison, so an
	// instance that was slow keeps being sampled and is noticed when it
	// recovers. Default 0.005; 0 to 0.5.
	ExploreShare float64 `json:"exploreShare"`
	// VanishGrace: as in WeightedConfig.
	VanishGrace Duration `json:"vanishGrace"`
}

// WeightedConfig is rollcall_weighted's configuration: the failure
// penalty, which feeds the latency figures the policy keeps, the vanish
// grace, and Traffic's fields.
type WeightedConfig struct {
	serviceconfig.LoadBalancingConfig `json:"-"`
	Traffic

	// FailurePenalty: as in P2CConfig.
	FailurePenalty Duration `json:"failurePenalty"`
	// VanishGrace is how long instances are kept after most or all of them
	// left the resolver's list at once (within 5 s) while their
	// connections were ready and their health service said SERVING: their
	// keys expired because they lost etcd, not because they stopped. An
	// instance that stopped (NOT_SERVING, connection closed) is never
	// kept. Default 30s; 0 turns it off; at most 10m.
	VanishGrace Duration `json:"vanishGrace"`
}

// vanishGrace is cfg's VanishGrace.
func vanishGrace(cfg serviceconfig.LoadBalancingConfig) time.Duration {
	switch c := cfg.(type) {
	case *P2CConfig:
		return time.Duration(c.VanishGrace)
	case *WeightedConfig:
		return time.Duration(c.VanishGrace)
	}
	return 0
}

// trafficOf is cfg's Traffic, and the factor beyond which an instance
// counts as slow (P2CConfig.SlowFactor; 2 for rollcall_weighted, which
// has none of its own).
func trafficOf(cfg serviceconfig.LoadBalancingConfig) (Traffic, float64) {
	switch c := cfg.(type) {
	case *P2CConfig:
		return c.Traffic, c.SlowFactor
	case *WeightedConfig:
		return c.Traffic, defaultSlowFactor
	}
	return DefaultTraffic(), defaultSlowFactor
}

// Duration is a time.Duration written in JSON as a string ("1s", "250ms").
type Duration time.Duration

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("%s is not a duration string like \"1s\"", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration: %w", s, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes a duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

const (
	defaultPenalty     = Duration(time.Second)
	defaultVanishGrace = Duration(30 * time.Second)
	defaultSlowFactor  = 2
)

func parseP2CConfig(js json.RawMessage) (serviceconfig.LoadBalancingConfig, error) {
	cfg := &P2CConfig{SlowFactor: defaultSlowFactor, StuckFactor: 4, FailurePenalty: defaultPenalty, ExploreShare: 0.005,
		VanishGrace: defaultVanishGrace, Traffic: DefaultTraffic()}
	if err := decodeStrict(P2CEWMA, js, cfg); err != nil {
		return nil, err
	}
	switch {
	case cfg.SlowFactor < 1 || cfg.SlowFactor > 1000:
		return nil, fmt.Errorf("%s: slowFactor %v: want 1 to 1000", P2CEWMA, cfg.SlowFactor)
	case cfg.StuckFactor < 1 || cfg.StuckFactor > 100:
		return nil, fmt.Errorf("%s: stuckFactor %v: want 1 to 100", P2CEWMA, cfg.StuckFactor)
	case cfg.ExploreShare < 0 || cfg.ExploreShare > 0.5:
		return nil, fmt.Errorf("%s: exploreShare %v: want 0 to 0.5", P2CEWMA, cfg.ExploreShare)
	}
	if err := checkDurations(P2CEWMA, cfg.FailurePenalty, cfg.VanishGrace); err != nil {
		return nil, err
	}
	if err := cfg.Traffic.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", P2CEWMA, err)
	}
	return cfg, nil
}

func parseWeightedConfig(js json.RawMessage) (serviceconfig.LoadBalancingConfig, error) {
	cfg := &WeightedConfig{FailurePenalty: defaultPenalty, VanishGrace: defaultVanishGrace, Traffic: DefaultTraffic()}
	if err := decodeStrict(Weighted, js, cfg); err != nil {
		return nil, err
	}
	if err := checkDurations(Weighted, cfg.FailurePenalty, cfg.VanishGrace); err != nil {
		return nil, err
	}
	if err := cfg.Traffic.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", Weighted, err)
	}
	return cfg, nil
}

func checkDurations(policy string, penalty, grace Duration) error {
	if penalty < Duration(time.Millisecond) || penalty > Duration(time.Minute) {
		return fmt.Errorf("%s: failurePenalty %v: want 1ms to 1m", policy, time.Duration(penalty))
	}
	if grace < 0 || grace > Duration(10*time.Minute) {
		return fmt.Errorf("%s: vanishGrace %v: want 0 to 10m", policy, time.Duration(grace))
	}
	return nil
}

// decodeStrict fills cfg from js (nothing when js is empty), rejecting
// unknown fields: a misspelt field would otherwise be silently ignored.
func decodeStrict(policy string, js json.RawMessage, cfg any) error {
	if len(bytes.TrimSpace(js)) == 0 || string(bytes.TrimSpace(js)) == "null" {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		return fmt.Errorf("%s config %s: %w", policy, js, err)
	}
	return nil
}

// Traffic is the traffic management both policies share, each part off
// by its own switch: zone-aware routing (zone.go), slow start
// (slowstart.go), and outlier ejection with a panic threshold
// (outlier.go). Its JSON fields sit beside the policy's own.
type Traffic struct {
	// Zone is the client's zone, as instances register theirs
	// (discovery.Metadata.Zone); instances with no zone count as every
	// zone's. While the instances of the zone hold at least its share of
	// the healthy capacity (an even split over the service's zones),
	// every call stays in it; below that, only the shortfall goes to the
	// other zones, in proportion to their spare capacity; with no healthy
	// instance in it, calls go to the others. Empty (the default) turns
	// zone-aware routing off. At most 128 bytes.
	Zone string `json:"zone"`
	// SlowStartWindow: an instance that joins while others already serve
	// starts, once ready, at a tenth of its weight and reaches all of it
	// over this window, so that a cold instance is not flooded. Default
	// 10s; 0 turns slow start off; at most 10m.
	SlowStartWindow Duration `json:"slowStartWindow"`
	// OutlierEjection takes out, for a while, an instance whose calls fail
	// far more than its peers'.
	OutlierEjection OutlierEjection `json:"outlierEjection"`
}

// OutlierEjection is when an instance is ejected, for how long, and when
// ejection gives way to balancing over every instance (panic mode). Only
// server-side failures count: UNAVAILABLE, INTERNAL, UNKNOWN, DATA_LOSS,
// and attempts that ran out of time (DEADLINE_EXCEEDED), these in the
// failure percentage only; an application's codes (NOT_FOUND,
// INVALID_ARGUMENT, ...) count as answers. With both rules at 0 nothing is
// ejected.
type OutlierEjection struct {
	// ConsecutiveFailures ejects an instance whose last this many attempts
	// failed (timeouts aside). Default 5; 0 turns the rule off; at most
	// 1000.
	ConsecutiveFailures int `json:"consecutiveFailures"`
	// FailurePercentage ejects an instance when, over an Interval with at
	// least MinimumCalls attempts, at least this percentage of them failed
	// or ran out of time, and at least twice the share of its peers'
	// attempts did: a fault every instance shares (a dependency down, a
	// deadline too short) ejects none. Default 50; 0 turns the rule off.
	FailurePercentage float64 `json:"failurePercentage"`
	// MinimumCalls is how many attempts an Interval must hold for the
	// failure percentage to count. Default 20; 1 to 1000000.
	MinimumCalls int `json:"minimumCalls"`
	// Interval is the window of the failure percentage. Default 5s; 100ms
	// to 10m.
	Interval Duration `json:"interval"`
	// BaseEjectionTime is the first ejection's length; the nth in a row
	// lasts n times as long (one fewer for every BaseEjectionTime served
	// since the last), at most MaxEjectionTime. An ejected instance comes
	// back on its own. Default 30s; 100ms to 1h.
	BaseEjectionTime Duration `json:"baseEjectionTime"`
	// MaxEjectionTime caps an ejection. Default 5m; BaseEjectionTime to
	// 24h.
	MaxEjectionTime Duration `json:"maxEjectionTime"`
	// MaxEjectionPercent is the most of a service's instances ejected at
	// once, rounded down (33.3 of 3 instances is 1). Default a third
	// (33.3); 0 to 100.
	MaxEjectionPercent float64 `json:"maxEjectionPercent"`
	// PanicThreshold: when fewer than this percentage of the instances are
	// healthy (not ejected, failing, stalled, or without a ready
	// connection), the policy balances over every instance it can reach,
	// ejected ones and other zones included (panic mode), as Envoy does.
	// Default 50; 0 turns panic mode off.
	PanicThreshold float64 `json:"panicThreshold"`
}

// DefaultTraffic is the traffic management of a policy whose config sets
// none: no zone, slow start over 10 s, DefaultOutlierEjection.
func DefaultTraffic() Traffic {
	return Traffic{SlowStartWindow: Duration(10 * time.Second), OutlierEjection: DefaultOutlierEjection()}
}

// DefaultOutlierEjection is Envoy's outlier detection, faster: 5
// consecutive failures, or 50 % of at least 20 attempts in 5 s (and twice
// the peers' share); 30 s for a first ejection, at most 5 m; at most a
// third of the instances; panic below half healthy.
func DefaultOutlierEjection() OutlierEjection {
	return OutlierEjection{
		ConsecutiveFailures: 5,
		FailurePercentage:   50,
		MinimumCalls:        20,
		Interval:            Duration(5 * time.Second),
		BaseEjectionTime:    Duration(30 * time.Second),
		MaxEjectionTime:     Duration(5 * time.Minute),
		MaxEjectionPercent:  100.0 / 3,
		PanicThreshold:      50,
	}
}

// Validate returns an error naming the first field out of range.
func (t Traffic) Validate() error {
	if len(t.Zone) > 128 {
		return fmt.Errorf("zone of %d bytes: want at most 128", len(t.Zone))
	}
	if t.SlowStartWindow < 0 || t.SlowStartWindow > Duration(10*time.Minute) {
		return fmt.Errorf("slowStartWindow %v: want 0 to 10m", time.Duration(t.SlowStartWindow))
	}
	return t.OutlierEjection.Validate()
}

// Validate returns an error naming the first field out of range.
func (o OutlierEjection) Validate() error {
	inRange := func(v, lo, hi float64) bool { return v >= lo && v <= hi } // false for NaN
	switch {
	case o.ConsecutiveFailures < 0 || o.ConsecutiveFailures > 1000:
		return fmt.Errorf("outlierEjection.consecutiveFailures %d: want 0 (off) to 1000", o.ConsecutiveFailures)
	case !inRange(o.FailurePercentage, 0, 100):
		return fmt.Errorf("outlierEjection.failurePercentage %v: want 0 (off) to 100", o.FailurePercentage)
	case o.MinimumCalls < 1 || o.MinimumCalls > 1000000:
		return fmt.Errorf("outlierEjection.minimumCalls %d: want 1 to 1000000", o.MinimumCalls)
	case o.Interval < Duration(100*time.Millisecond) || o.Interval > Duration(10*time.Minute):
		return fmt.Errorf("outlierEjection.interval %v: want 100ms to 10m", time.Duration(o.Interval))
	case o.BaseEjectionTime < Duration(100*time.Millisecond) || o.BaseEjectionTime > Duration(time.Hour):
		return fmt.Errorf("outlierEjection.baseEjectionTime %v: want 100ms to 1h", time.Duration(o.BaseEjectionTime))
	case o.MaxEjectionTime < o.BaseEjectionTime || o.MaxEjectionTime > Duration(24*time.Hour):
		return fmt.Errorf("outlierEjection.maxEjectionTime %v: want baseEjectionTime (%v) to 24h", time.Duration(o.MaxEjectionTime), time.Duration(o.BaseEjectionTime))
	case !inRange(o.MaxEjectionPercent, 0, 100):
		return fmt.Errorf("outlierEjection.maxEjectionPercent %v: want 0 to 100", o.MaxEjectionPercent)
	case !inRange(o.PanicThreshold, 0, 100):
		return fmt.Errorf("outlierEjection.panicThreshold %v: want 0 (off) to 100", o.PanicThreshold)
	}
	return nil
}

// enabled: some rule can eject an instance.
func (o OutlierEjection) enabled() bool {
	return (o.ConsecutiveFailures > 0 || o.FailurePercentage > 0) && o.MaxEjectionPercent > 0
}
